//! Shared test code: the harness, the independent reference flattener, the mock Zephr API,
//! the store servers (moto, fake-gcs-server, Azurite) and the fault-injecting proxy.
#![allow(dead_code)]

pub mod harness;
pub mod mock_zephr;
pub mod postgres;
pub mod proxy;
pub mod reference;
pub mod s3;
pub mod stores;
