//! Attested capacity of hosts, as the markets need it: liveness and idle GPUs come from
//! [`crate::hosts::capacity`]; what the book adds is that a GPU offered by an open ask or
//! used by a live lease is not free.

pub(crate) use crate::hosts::capacity::{GPU_IDLE_SQL, LIVE_SQL as HOST_LIVE_SQL};

/// The SQL condition for "this GPU (aliased `g`) is taken": offered by an open ask or in a
/// lease that is not over.
pub(crate) const GPU_TAKEN_SQL: &str =
    "exists (select 1 from ask_gpus a where a.gpu_uuid = g.gpu_uuid and a.state = 'bound')
     or exists (select 1 from leases l where l.host_id = g.host_id
                and l.state in ('pending', 'starting', 'running') and g.gpu_uuid = any(l.gpu_uuids))";
