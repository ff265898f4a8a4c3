//! A JSON document written into SQL text as a dollar-quoted literal.
//!
//! A matcher batch sends "BEGIN; EXECUTE checks(...)" and "EXECUTE writes(...); COMMIT" as
//! simple queries, one round trip each, and a simple query carries no bind parameters. Inside
//! `$tag$...$tag$` nothing is escaped and nothing is interpreted, so the text is safe for any
//! content that does not contain the tag; the tag is random and checked against the content.

/// `document`, serialized to JSON, as a dollar-quoted SQL literal of type jsonb.
pub(crate) fn jsonb(document: &impl serde::Serialize) -> Result<String, serde_json::Error> {
    let text = serde_json::to_string(document)?;
    loop {
        let tag = format!("$j{:016x}$", rand::random::<u64>());
        if !text.contains(&tag) {
            return Ok(format!("{tag}{text}{tag}::jsonb"));
        }
    }
}

/// A bigint[] literal.
pub(crate) fn bigint_array(values: &[i64]) -> String {
    let items: Vec<String> = values.iter().map(i64::to_string).collect();
    format!("'{{{}}}'::bigint[]", items.join(","))
}

/// A uuid[] literal (a UUID's text is hex digits and dashes: nothing to escape).
pub(crate) fn uuid_array(values: &[uuid::Uuid]) -> String {
    let items: Vec<String> = values.iter().map(uuid::Uuid::to_string).collect();
    format!("'{{{}}}'::uuid[]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn any_text_stays_inside_its_quotes() {
        let hostile = json!({"key": "'); drop table orders; --", "memo": "$$ $j0$ \\ \u{0007}"});
        let literal = jsonb(&hostile).unwrap();
        let tag = &literal[..literal[1..].find('$').unwrap() + 2];
        assert!(literal.starts_with(tag) && literal.ends_with(&format!("{tag}::jsonb")));
        let inner = &literal[tag.len()..literal.len() - tag.len() - "::jsonb".len()];
        assert_eq!(serde_json::from_str::<serde_json::Value>(inner).unwrap(), hostile);
        assert_eq!(bigint_array(&[1, 0, -2]), "'{1,0,-2}'::bigint[]");
        assert_eq!(bigint_array(&[]), "'{}'::bigint[]");
        let id = uuid::Uuid::from_u128(1);
        assert_eq!(uuid_array(&[id]), "'{00000000-0000-0000-0000-000000000001}'::uuid[]");
    }

    /// Postgres reads the literal back as exactly the document, whatever its strings hold.
    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn postgres_reads_back_the_same_document(pool: sqlx::PgPool) {
        use sqlx::Row;
        let hostile = json!({"key": "'); drop table orders; --", "memo": "$$ $j$ \\ \n ' \"", "n": [1, 2.5]});
        let sql = format!("select {}", jsonb(&hostile).unwrap());
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_all(&pool).await.unwrap();
        let sqlx::types::Json(back): sqlx::types::Json<serde_json::Value> = rows[0].try_get(0).unwrap();
        assert_eq!(back, hostile);
        let orders: i64 = sqlx::query_scalar("select count(*) from orders").fetch_one(&pool).await.unwrap();
        assert_eq!(orders, 0, "the orders table is still there");
    }
}
