//! `POST /api/v1/hosts`: a provider binds a host key and its GPUs with a signed inventory.

use std::collections::HashSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use capex_core::report::{EnvelopeError, parse_public_key};
use capex_core::{GpuBackend, GpuClass, INVENTORY_DOMAIN, InventoryPayload, Role, SignedEnvelope};
use chrono::Utc;
use uuid::Uuid;

use super::ingest::GPUS_PER_HOST_MAX;
use super::views::{HostView, load_host_view};
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::ApiJson;
use crate::input::{self, TextKind};
use crate::state::AppState;

pub const HOST_NAME_CHARS_MAX: usize = 100;
/// Longest GPU uuid, GPU name, PCI bus id, driver or CUDA version, in characters.
pub const GPU_TEXT_CHARS_MAX: usize = 128;

#[utoipa::path(post, path = "/api/v1/hosts", tag = "hosts", security(("bearer" = [])),
    request_body(content = capex_core::report::SignedEnvelope, description = "A signed envelope: {\"payload\": base64(JSON InventoryPayload), \"signature\": base64(ed25519 over 'capex/inventory/v1' || payload)} signed by the host key named in the payload"),
    responses(
        (status = 201, body = HostView, description = "Registered"),
        (status = 200, body = HostView, description = "This key was already registered by you: the existing host"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem, description = "gpu_already_registered, host_key_registered"),
        (status = 422, body = Problem, description = "simulated_gpus_refused outside demo mode unless CAPEX_ALLOW_SIMULATED=true; validation errors"),
    ))]
pub(crate) async fn register_host(
    State(state): State<AppState>,
    auth: AuthUser,
    ApiJson(envelope): ApiJson<SignedEnvelope>,
) -> ApiResult<(StatusCode, Json<HostView>)> {
    auth.require(Role::Provider)?;
    let decoded = envelope.decode().map_err(|err| match err {
        EnvelopeError::InvalidBase64(field) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_base64", format!("{field} is not valid base64"))
                .with_field(field)
        }
        other => ApiError::new(StatusCode::BAD_REQUEST, "invalid_base64", other.to_string()).with_field("signature"),
    })?;
    // The key the inventory must verify under travels inside it, so this one payload is
    // parsed before the signature check; nothing from it is used until the check passes.
    let inventory: InventoryPayload = serde_json::from_slice(&decoded.payload)
        .map_err(|err| ApiError::invalid("payload", "invalid_payload", format!("inventory payload: {err}")))?;
    let key = parse_public_key(&inventory.public_key).map_err(|_| {
        ApiError::invalid("payload.public_key", "invalid_public_key", "public_key must be a base64 ed25519 key")
    })?;
    capex_core::report::verify_strict(INVENTORY_DOMAIN, &key, &decoded.payload, &decoded.signature).map_err(|_| {
        ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", "the inventory is not signed by its public_key")
    })?;
    check_inventory(&inventory, state.config.report_skew_s)?;
    if inventory.backend == GpuBackend::Simulated && !state.config.demo && !state.config.allow_simulated {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "simulated_gpus_refused",
            "this exchange does not list simulated GPUs (the inventory was made by the agent's simulated backend); \
             run the agent with its NVML backend on a host with NVIDIA GPUs",
        )
        .with_field("payload.backend"));
    }

    let mut tx = state.pool.begin().await?;
    let existing: Option<(Uuid, Uuid)> =
        sqlx::query_as("select host_id, owner_id from hosts where public_key = $1 for no key update")
            .bind(key.as_bytes().as_slice())
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((host_id, owner_id)) = existing {
        if owner_id != auth.user_id {
            return Err(key_taken());
        }
        // Registering again with the same key is a retry: answer with the host as it is.
        tx.commit().await?;
        let mut conn = state.pool.acquire().await?;
        let view = load_host_view(&mut conn, host_id).await?.ok_or_else(|| ApiError::not_found("host"))?;
        return Ok((StatusCode::OK, Json(view)));
    }
    let uuids: Vec<String> = inventory.gpus.iter().map(|g| g.uuid.clone()).collect();
    let claimed: Option<String> =
        sqlx::query_scalar("select gpu_uuid from host_gpus where gpu_uuid = any($1) order by gpu_uuid limit 1")
            .bind(&uuids)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(uuid) = claimed {
        return Err(gpu_taken(&inventory, &uuid));
    }
    let host_id = Uuid::now_v7();
    sqlx::query(
        "insert into hosts (host_id, owner_id, name, public_key, report_interval_s, driver_version, cuda_version,
                            backend)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(host_id)
    .bind(auth.user_id)
    .bind(inventory.name.trim())
    .bind(key.as_bytes().as_slice())
    .bind(inventory.interval_s as i32)
    .bind(&inventory.driver_version)
    .bind(&inventory.cuda_version)
    .bind(inventory.backend.as_str())
    .execute(&mut *tx)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.constraint() == Some("hosts_public_key_key") => key_taken(),
        _ => ApiError::from(err),
    })?;
    for gpu in &inventory.gpus {
        let class = GpuClass::from_nvml(&gpu.name, gpu.memory_total_mib);
        sqlx::query(
            "insert into host_gpus (gpu_uuid, host_id, gpu_index, name, class, memory_total_mib, pci_bus_id)
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&gpu.uuid)
        .bind(host_id)
        .bind(gpu.index as i32)
        .bind(&gpu.name)
        .bind(class.as_str())
        .bind(gpu.memory_total_mib as i64)
        .bind(&gpu.pci_bus_id)
        .execute(&mut *tx)
        .await
        .map_err(|err| match &err {
            // Two registrations racing for one GPU: the loser hears the same as above.
            sqlx::Error::Database(db) if db.constraint() == Some("host_gpus_pkey") => gpu_taken(&inventory, &gpu.uuid),
            _ => ApiError::from(err),
        })?;
    }
    tx.commit().await?;
    tracing::info!(%host_id, owner = %auth.user_id, gpus = inventory.gpus.len(), "host registered");
    let mut conn = state.pool.acquire().await?;
    let view = load_host_view(&mut conn, host_id).await?.ok_or_else(|| ApiError::not_found("host"))?;
    Ok((StatusCode::CREATED, Json(view)))
}

fn key_taken() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "host_key_registered", "this host key is registered to another account")
        .with_field("payload.public_key")
}

fn gpu_taken(inventory: &InventoryPayload, uuid: &str) -> ApiError {
    let index = inventory.gpus.iter().position(|g| g.uuid == uuid).unwrap_or(0);
    ApiError::new(StatusCode::CONFLICT, "gpu_already_registered", format!("GPU {uuid} already belongs to a host"))
        .with_field(format!("payload.gpus[{index}].uuid"))
}

/// Every text field of an inventory with its bound: the input rules apply to each of them.
fn inventory_text(inventory: &InventoryPayload) -> Vec<(String, &str, usize)> {
    let mut fields = vec![("payload.name".to_string(), inventory.name.as_str(), HOST_NAME_CHARS_MAX)];
    for (field, text) in [("driver_version", &inventory.driver_version), ("cuda_version", &inventory.cuda_version)] {
        if let Some(text) = text {
            fields.push((format!("payload.{field}"), text.as_str(), GPU_TEXT_CHARS_MAX));
        }
    }
    for (i, gpu) in inventory.gpus.iter().enumerate() {
        fields.push((format!("payload.gpus[{i}].uuid"), gpu.uuid.as_str(), GPU_TEXT_CHARS_MAX));
        fields.push((format!("payload.gpus[{i}].name"), gpu.name.as_str(), GPU_TEXT_CHARS_MAX));
        if let Some(bus) = &gpu.pci_bus_id {
            fields.push((format!("payload.gpus[{i}].pci_bus_id"), bus.as_str(), GPU_TEXT_CHARS_MAX));
        }
    }
    fields
}

/// Shape rules for an inventory; all checked before anything is written.
fn check_inventory(inventory: &InventoryPayload, skew_s: u64) -> Result<(), ApiError> {
    if inventory.gpus.len() > GPUS_PER_HOST_MAX {
        return Err(ApiError::invalid(
            "payload.gpus",
            "invalid_gpus",
            format!("a host registers 1 to {GPUS_PER_HOST_MAX} GPUs"),
        ));
    }
    for (field, text, chars_max) in inventory_text(inventory) {
        input::check_text(&field, text, TextKind::Line, chars_max)?;
    }
    let name = inventory.name.trim();
    if name.is_empty() || name.chars().count() > HOST_NAME_CHARS_MAX {
        return Err(ApiError::invalid(
            "payload.name",
            "invalid_name",
            format!("name must be 1 to {HOST_NAME_CHARS_MAX} characters"),
        ));
    }
    if !(1..=3600).contains(&inventory.interval_s) {
        return Err(ApiError::invalid("payload.interval_s", "invalid_interval", "interval_s must be 1 to 3600"));
    }
    let age_s = (Utc::now() - inventory.created_at).num_seconds();
    if age_s.unsigned_abs() > skew_s {
        return Err(ApiError::invalid(
            "payload.created_at",
            "clock_skew",
            format!("created_at is {age_s} s away from the server clock (window {skew_s} s)"),
        ));
    }
    if inventory.gpus.is_empty() || inventory.gpus.len() > GPUS_PER_HOST_MAX {
        return Err(ApiError::invalid(
            "payload.gpus",
            "invalid_gpus",
            format!("a host registers 1 to {GPUS_PER_HOST_MAX} GPUs"),
        ));
    }
    let mut uuids = HashSet::new();
    let mut indexes = HashSet::new();
    for (i, gpu) in inventory.gpus.iter().enumerate() {
        let bad_text = |t: &str| t.trim().is_empty() || t.chars().count() > GPU_TEXT_CHARS_MAX;
        if bad_text(&gpu.uuid) || !uuids.insert(gpu.uuid.as_str()) {
            return Err(ApiError::invalid(
                &format!("payload.gpus[{i}].uuid"),
                "invalid_gpu_uuid",
                "each GPU needs a distinct uuid of 1 to 128 characters",
            ));
        }
        if bad_text(&gpu.name) {
            return Err(ApiError::invalid(
                &format!("payload.gpus[{i}].name"),
                "invalid_gpu_name",
                "GPU name must be 1 to 128 characters",
            ));
        }
        if !indexes.insert(gpu.index) || gpu.index > i32::MAX as u32 || gpu.memory_total_mib > i64::MAX as u64 {
            return Err(ApiError::invalid(
                &format!("payload.gpus[{i}].index"),
                "invalid_gpu_index",
                "GPU indexes must be distinct",
            ));
        }
    }
    Ok(())
}
