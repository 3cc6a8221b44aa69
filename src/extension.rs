//! What a run adds to the `users` table: wide attribute columns and hashed identifiers.
//!
//! The definitions live in [`crate::flatten::users`], next to the workers that fill the
//! columns; this module keeps their public path.

pub use crate::flatten::users::{
    UsersExtension, def_of, identifiers, layout, push_wide, schema_of,
};
