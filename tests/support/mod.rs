//! Shared test code: the harness, the independent reference flattener, the mock Zephr API,
//! moto and the fault-injecting proxy.
#![allow(dead_code)]

pub mod harness;
pub mod mock_zephr;
pub mod proxy;
pub mod reference;
pub mod s3;
