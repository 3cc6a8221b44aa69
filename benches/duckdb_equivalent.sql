-- DuckDB doing the job of `zephr-etl convert`, for benches/compare.sh (issue 4).
--
-- The same input and the same three tables in the same two formats: users, grants and
-- attributes, each to CSV and to zstd Parquet. `{input}` and `{out}` are replaced by the
-- runner, benches/duckdb_run.py, which runs the statements in order in an in-memory database.
--
-- Written for DuckDB's speed, as a data engineer who knows it would: the export is read once
-- into a table with declared types (DuckDB's JSON reader is fastest when it need not infer a
-- schema), grants and attributes are flattened once into tables, and each table is then
-- copied twice. Attributes are read as a MAP: tenants' attribute slugs are arbitrary and
-- their values mixed, so a STRUCT (and UNPIVOT over it) would need the slugs in advance and
-- would lose the difference between a null value and a missing key. Grants stay JSON
-- and their fields are extracted by path, because some grants of the generated export repeat
-- a key, which DuckDB's STRUCT and MAP readers refuse.
--
-- Where DuckDB does less than zephr-etl, to its advantage: no `extra` columns (the unmapped
-- fields as JSON), no per-item validation or error locations, and attribute values that are
-- objects or arrays come out as DuckDB's JSON text rather than the source's text.

SET TimeZone = 'UTC';

CREATE TEMP TABLE items AS
SELECT *
FROM read_json('{input}', format = 'array', columns = {
    'user': 'STRUCT(
        user_id VARCHAR,
        identifiers STRUCT(email_address VARCHAR, username VARCHAR),
        email_verified BOOLEAN,
        tracking_id VARCHAR,
        registered VARCHAR,
        registration_tenant VARCHAR,
        registration_state VARCHAR,
        last_login VARCHAR,
        attributes MAP(VARCHAR, JSON))',
    'seq-no': 'VARCHAR',
    'grants': 'STRUCT(results JSON[])'
});

CREATE TEMP VIEW users AS
SELECT
    "user".user_id AS user_id,
    "user".identifiers.email_address AS email_address,
    "user".identifiers.username AS username,
    "user".email_verified AS email_verified,
    "user".tracking_id AS tracking_id,
    CAST("user".registered AS TIMESTAMPTZ) AS registered,
    "user".registration_tenant AS registration_tenant,
    "user".registration_state AS registration_state,
    CAST("user".last_login AS TIMESTAMPTZ) AS last_login,
    CAST("seq-no" AS BIGINT) AS seq_no
FROM items;

CREATE TEMP TABLE grants AS
SELECT
    user_id,
    COALESCE(f[1], f[2]) AS grant_id,
    f[3] AS account_id,
    f[4] AS expiry_state,
    f[5] AS entitlement_type,
    f[6] AS entitlement_id,
    f[7] AS product_id,
    CAST(f[8] AS TIMESTAMPTZ) AS start_time,
    CAST(f[9] AS TIMESTAMPTZ) AS end_time,
    CAST(COALESCE(f[10], f[11]) AS TIMESTAMPTZ) AS created_at
FROM (
    -- One parse of each grant for all its fields (a list of paths), not one per field.
    SELECT user_id, json_extract_string(g, [
        '$.grantId', '$.grant_id', '$.account_id', '$.expiry_state', '$.entitlement_type',
        '$.entitlement_id', '$.product_id', '$.startTime', '$.endTime', '$.createdAt',
        '$.created_at']) AS f
    FROM (SELECT "user".user_id AS user_id, UNNEST(grants.results) AS g FROM items)
);

-- A JSON null value arrives as SQL NULL in the MAP, so NULL means the `null` type here.
CREATE TEMP TABLE attributes AS
SELECT
    user_id,
    key,
    CASE json_type(value)
        WHEN 'VARCHAR' THEN value ->> '$'
        ELSE CAST(value AS VARCHAR)
    END AS value,
    CASE
        WHEN value IS NULL THEN 'null'
        ELSE CASE json_type(value)
            WHEN 'VARCHAR' THEN 'string'
            WHEN 'BOOLEAN' THEN 'boolean'
            WHEN 'OBJECT' THEN 'object'
            WHEN 'ARRAY' THEN 'array'
            ELSE 'number'
        END
    END AS value_type
FROM (
    SELECT
        "user".user_id AS user_id,
        UNNEST(map_keys("user".attributes)) AS key,
        UNNEST(map_values("user".attributes)) AS value
    FROM items
);

COPY users TO '{out}/users.csv' (HEADER);
COPY grants TO '{out}/grants.csv' (HEADER);
COPY attributes TO '{out}/attributes.csv' (HEADER);
COPY users TO '{out}/users.parquet' (FORMAT parquet, COMPRESSION zstd);
COPY grants TO '{out}/grants.parquet' (FORMAT parquet, COMPRESSION zstd);
COPY attributes TO '{out}/attributes.parquet' (FORMAT parquet, COMPRESSION zstd);
