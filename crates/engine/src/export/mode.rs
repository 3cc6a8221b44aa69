//! How a run treats tables that already hold rows (SPEC section 7): the mode of the
//! current-state destinations (`--format delta`, and PostgreSQL), shared by both.

/// What a run does to tables that already hold rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableMode {
    /// Create and fill the tables; tables that hold rows are refused.
    #[default]
    Create,
    /// Replace every row of the tables.
    Overwrite,
    /// The run's users replace the same users' rows in every table (users upserted on
    /// `user_id`, their grants and attributes replaced); others keep theirs; state events are
    /// appended. With `delete_missing` the run is a full export: users absent from it are
    /// removed with their grants and attributes.
    Merge {
        /// Remove the users the run does not hold.
        delete_missing: bool,
    },
}

impl TableMode {
    /// The mode's name for the manifest and messages.
    pub fn name(self) -> &'static str {
        match self {
            TableMode::Create => "create",
            TableMode::Overwrite => "overwrite",
            TableMode::Merge {
                delete_missing: false,
            } => "merge",
            TableMode::Merge {
                delete_missing: true,
            } => "merge-delete-missing",
        }
    }
}
