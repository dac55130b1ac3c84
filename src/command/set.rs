//! Sets: the commands, their table rows and their handlers.

use super::CommandDef;

/// This family's rows of the command table (see `table::families`).
pub static COMMANDS: &[CommandDef] = &[];
