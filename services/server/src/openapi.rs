//! The OpenAPI document at `/api/v1/openapi.json` and the Swagger UI at `/api/v1/docs`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem_docs::ProblemResponses;
use crate::{auth, error, hosts, markets, operator, wallet};

#[derive(OpenApi)]
#[openapi(
    info(title = "Capex API", description = "Compute-credit ledger and GPU capacity exchange"),
    paths(
        auth::register, auth::login, auth::create_api_key, auth::list_api_keys, auth::revoke_api_key, auth::me,
        wallet::get_wallet, wallet::get_ledger, wallet::create_transfer,
        wallet::movements::get_movements, wallet::movements::get_balance_history,
        operator::mint, operator::invariants, operator::users, operator::fees,
        markets::place_order, markets::cancel_order, markets::get_order, markets::list_orders,
        markets::list_markets, markets::get_book, markets::top::get_top, markets::list_trades, markets::list_candles,
        hosts::register::register_host, hosts::views::list_hosts, hosts::views::get_host,
        hosts::reports::post_report, hosts::views::list_reports, hosts::views::get_telemetry, hosts::capacity::get_capacity,
        hosts::unattributed::list_unattributed,
        crate::jobs::routes::list_jobs, crate::jobs::routes::get_job, crate::jobs::routes::get_logs,
        crate::jobs::routes::get_telemetry, crate::jobs::routes::cancel_job, crate::jobs::routes::release_job,
        crate::jobs::children::place_child, crate::jobs::children::cancel_child, crate::markets::estimate::get_estimate,
        crate::jobs::host::assignments, crate::jobs::host::ack, crate::jobs::host::upload_logs,
        crate::jobs::reliability::get_reliability,
        crate::startup::healthz, crate::feed::stream,
        crate::verification::views::get_verification, crate::verification::challenges::post_commitment,
        crate::verification::challenges::post_answer, crate::verification::attestations::post_attestation,
        crate::verification::operator_challenge, crate::verification::operator_attest,
        crate::verification::operator_clear_block,
    ),
    components(schemas(error::Problem)),
    modifiers(&BearerAuth, &ProblemResponses),
    tags(
        (name = "auth", description = "Accounts, login tokens, API keys"),
        (name = "wallet", description = "Balances, ledger history, transfers"),
        (name = "operator", description = "Minting, invariants, oversight"),
        (name = "markets", description = "Order books, orders, trades, market data"),
        (name = "hosts", description = "Provider hosts, signed reports, telemetry, capacity"),
        (name = "jobs", description = "Leases as jobs: state, logs, cancel, metered cost"),
        (name = "feed", description = "Live Server-Sent Events"),
        (name = "verification", description = "What the exchange checked about each GPU: levels, challenges, CC evidence"),
        (name = "system", description = "Health"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A login token (JWT), an API key starting with capex_, or (on the routes that say so) a \
                         running job's token starting with cxj_",
                    ))
                    .build(),
            ),
        );
    }
}
