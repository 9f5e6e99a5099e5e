//! What every answer but a 200 carries, and the answer of a change with nothing else to say.

use serde::{Deserialize, Serialize};

/// The body of every answer whose status is not 200: 400 (bad input), 401 (token), 404, 408 (too
/// slow), 409 (conflict), 411, 413, 431, 500, 503 (busy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, in words for the DSI.
    pub error: String,
}

/// A change that was made and has nothing else to report: `{"ok": true}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub ok: bool,
}

impl Done {
    pub const YES: Done = Done { ok: true };
}
