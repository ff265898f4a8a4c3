//! What each GPU of a host is doing now, as one word the provider can trust: idle, offered
//! by an ask, leased to a job, under a proof-of-compute challenge, running a foreign
//! process, or not reporting.
//!
//! `busy` in a host view says only that the latest report shows a process; a GPU bound to
//! an open ask runs nothing and looked `free` although no one else could buy it (issue 19).
//! The state is computed here, in one place, from the rows that actually take a GPU:
//! `leases`, `gpu_challenges`, `ask_gpus` and the latest report's columns of `host_gpus`.
//! A new way of taking a GPU (e.g. interruptible capacity) adds a variant to [`GpuState`],
//! a column to [`GPU_ACTIVITY_SQL`] and a line to [`GpuActivity::state`], nowhere else.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

/// What a GPU is doing. Serialized as a snake_case string; clients must treat a value
/// they do not know as "taken for a reason this client cannot name" (more will come).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GpuState {
    /// In the latest report of a live host, no process on it, nothing holds it: an ask
    /// may offer it.
    Idle,
    /// Bound to an open ask (`order_id`): for sale, running nothing yet.
    Offered,
    /// In an on-demand lease that is not over (`lease_id`): a buyer's job has it.
    Leased,
    /// In an interruptible lease (`lease_id`) and still offered on demand by its ask
    /// (`order_id`): an on-demand buyer would preempt the job.
    Interruptible,
    /// An on-demand trade took it from an interruptible lease (`lease_id`, the preempted
    /// one) whose job has its notice (SIGTERM sent, SIGKILL at the deadline); the new
    /// lease's job starts on it when that job is gone.
    Preempting,
    /// A proof-of-compute challenge (`challenge_id`) is issued or committed on it; the
    /// challenge takes the whole GPU until it is decided.
    UnderChallenge,
    /// The latest report shows a compute process that belongs to no lease.
    ForeignProcess,
    /// The host is not live or its latest report does not list this GPU.
    Offline,
}

impl GpuState {
    pub fn as_str(self) -> &'static str {
        match self {
            GpuState::Idle => "idle",
            GpuState::Offered => "offered",
            GpuState::Leased => "leased",
            GpuState::Interruptible => "interruptible",
            GpuState::Preempting => "preempting",
            GpuState::UnderChallenge => "under_challenge",
            GpuState::ForeignProcess => "foreign_process",
            GpuState::Offline => "offline",
        }
    }
}

/// The facts about one GPU that decide its state, and the ids that say which order, lease
/// or challenge holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct GpuActivity {
    pub gpu_uuid: String,
    /// The host is live and its latest report lists the GPU.
    pub reporting: bool,
    pub foreign_processes: i32,
    /// The open ask the GPU is bound to.
    pub order_id: Option<Uuid>,
    /// The lease (pending, running or preempting) that has the GPU; a preempting one
    /// first, its job still runs there.
    pub lease_id: Option<Uuid>,
    /// That lease's state and priority (`on_demand` or `interruptible`).
    pub lease_state: Option<String>,
    pub lease_priority: Option<String>,
    /// The open (issued or committed) challenge on the GPU.
    pub challenge_id: Option<Uuid>,
}

impl GpuActivity {
    /// The one state shown, by precedence: what holds the GPU most firmly first. A lease
    /// outranks everything (the buyer pays for it even while the host is silent); a
    /// challenge runs on the GPU; a GPU not in the latest report is `offline` whatever the
    /// older report said; a foreign process keeps an offered GPU from being sold.
    pub fn state(&self) -> GpuState {
        if self.lease_id.is_some() {
            match (self.lease_state.as_deref(), self.lease_priority.as_deref()) {
                (Some("preempting"), _) => GpuState::Preempting,
                (_, Some("interruptible")) => GpuState::Interruptible,
                _ => GpuState::Leased,
            }
        } else if self.challenge_id.is_some() {
            GpuState::UnderChallenge
        } else if !self.reporting {
            GpuState::Offline
        } else if self.foreign_processes > 0 {
            GpuState::ForeignProcess
        } else if self.order_id.is_some() {
            GpuState::Offered
        } else {
            GpuState::Idle
        }
    }
}

/// One row per GPU of the hosts `$1`: the facts [`GpuActivity::state`] reads. The lease
/// states are those in which a lease holds its GPUs (as `markets::GPU_UNTAKEN_SQL` has
/// them); an ask's bound GPU is released when the ask fills, expires or is cancelled.
pub(crate) const GPU_ACTIVITY_SQL: &str = "select g.gpu_uuid,
        (coalesce(g.last_seen_at >= h.last_report_at, false) and h.status = 'active' and h.last_report_at is not null
         and h.last_report_at > now() - make_interval(secs => 3 * h.report_interval_s)) as reporting,
        g.foreign_processes,
        (select a.order_id from ask_gpus a join orders o using (order_id)
         where a.gpu_uuid = g.gpu_uuid and a.state = 'bound' and o.status = 'open' limit 1) as order_id,
        l.lease_id, l.state as lease_state, l.priority as lease_priority,
        (select c.challenge_id from gpu_challenges c
         where c.gpu_uuid = g.gpu_uuid and c.state in ('issued', 'committed') order by c.issued_at desc limit 1)
            as challenge_id
    from host_gpus g join hosts h using (host_id)
        left join lateral (
            select l.lease_id, l.state, l.priority from leases l
            where l.host_id = g.host_id and l.state in ('pending', 'running', 'preempting')
              and g.gpu_uuid = any(l.gpu_uuids)
            order by (l.state = 'preempting') desc, l.created_at desc limit 1) l on true
    where g.host_id = any($1)";

/// The activity of every GPU of these hosts, by GPU UUID.
pub(crate) async fn gpu_activity(
    conn: &mut sqlx::PgConnection,
    host_ids: &[Uuid],
) -> Result<HashMap<String, GpuActivity>, ApiError> {
    let rows: Vec<GpuActivity> = sqlx::query_as(GPU_ACTIVITY_SQL).bind(host_ids).fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().map(|row| (row.gpu_uuid.clone(), row)).collect())
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::{GpuActivity, GpuState};

    fn reporting() -> GpuActivity {
        GpuActivity { gpu_uuid: "GPU-1".into(), reporting: true, ..GpuActivity::default() }
    }

    #[test]
    fn a_reporting_gpu_nothing_holds_is_idle() {
        assert_eq!(reporting().state(), GpuState::Idle);
        assert_eq!(GpuState::Idle.as_str(), "idle");
    }

    #[test]
    fn precedence_lease_then_challenge_then_offline_then_foreign_then_ask() {
        let id = Some(Uuid::nil());
        let all = GpuActivity { lease_id: id, challenge_id: id, order_id: id, foreign_processes: 1, ..reporting() };
        assert_eq!(all.state(), GpuState::Leased);
        let no_lease = GpuActivity { lease_id: None, ..all.clone() };
        assert_eq!(no_lease.state(), GpuState::UnderChallenge);
        let silent = GpuActivity { challenge_id: None, reporting: false, ..no_lease.clone() };
        assert_eq!(silent.state(), GpuState::Offline);
        let foreign = GpuActivity { reporting: true, ..silent.clone() };
        assert_eq!(foreign.state(), GpuState::ForeignProcess);
        let offered = GpuActivity { foreign_processes: 0, ..foreign };
        assert_eq!(offered.state(), GpuState::Offered);
    }

    #[test]
    fn an_interruptible_lease_and_a_preempting_one_say_so() {
        let id = Some(Uuid::nil());
        let leased = |state: &str, priority: &str| GpuActivity {
            lease_id: id,
            order_id: id,
            lease_state: Some(state.into()),
            lease_priority: Some(priority.into()),
            ..reporting()
        };
        assert_eq!(leased("running", "on_demand").state(), GpuState::Leased);
        assert_eq!(leased("running", "interruptible").state(), GpuState::Interruptible);
        assert_eq!(leased("pending", "interruptible").state(), GpuState::Interruptible);
        assert_eq!(leased("preempting", "interruptible").state(), GpuState::Preempting);
    }

    #[test]
    fn names_are_the_serialized_strings() {
        for state in [
            GpuState::Idle,
            GpuState::Offered,
            GpuState::Leased,
            GpuState::Interruptible,
            GpuState::Preempting,
            GpuState::UnderChallenge,
            GpuState::ForeignProcess,
            GpuState::Offline,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::json!(state.as_str()));
        }
    }
}
