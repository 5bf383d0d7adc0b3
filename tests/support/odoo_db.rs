//! A stand-in for an Odoo 17 database behind its external API (`/jsonrpc`), and for the webhooks
//! its automation rules post. Odoo cannot run here; this answers with the shapes Odoo 17 sends,
//! following these files of odoo/odoo (branch 17.0):
//!
//! - `odoo/http.py` (`JsonRPCDispatcher`): `{"jsonrpc": "2.0", "id", "result"}`, or HTTP 200
//!   with `{"error": {"code": 200, "message": "Odoo Server Error", "data": {"name", "debug",
//!   "message", "arguments", "context"}}}`;
//! - `odoo/service/common.py` (`exp_version`, `exp_login`, `exp_authenticate`: the uid or
//!   `false`), `odoo/service/model.py` (`execute_kw`: `security.check` raises
//!   `odoo.exceptions.AccessDenied`; an unknown model is a `UserError`);
//! - `odoo/models.py` (`search`, `search_count`, `search_read(domain, fields, offset, limit,
//!   order, **read_kwargs)`, `read(fields, load='_classic_read')`: many2one values as
//!   `[id, display_name]`, bare ids with any other `load`; `id` always; datetimes written by
//!   `json_default` as `%Y-%m-%d %H:%M:%S`; an unknown field is `ValueError("Invalid field
//!   ...")`; `fields_get`; `active_test`), `odoo/osv/expression.py` (domains: prefix `&`, `|`,
//!   `!`, implicit `&`, leaves `[field, operator, value]`);
//! - `odoo/addons/base/models/ir_actions.py` (`_run_action_webhook`): one POST of
//!   `json.dumps({"_model", "_id", "_action": "<name>(#<id>)"} | record.read(fields,
//!   load=None)[0], sort_keys=True, default=str)` (datetimes as `str(datetime)`, with
//!   microseconds unless they are 0), `timeout=1`, errors only logged, no retry; sent while the
//!   change's transaction is open, so readers see the change only after the post;
//! - `addons/base_automation/models/base_automation.py` (`trigger`: `on_create`, `on_write`,
//!   `on_create_or_write`, `on_unlink`; `action_server_ids`), with `write_date` set to the
//!   transaction's time, with microseconds, on every create and write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

/// A field of a model: its type (`char`, `integer`, `float`, `boolean`, `selection`,
/// `datetime`, `date`, `many2one`, `one2many`, `many2many`) and, for relations, the model.
#[derive(Clone, Debug)]
pub struct FieldDef {
    pub kind: &'static str,
    pub relation: Option<&'static str>,
}

#[derive(Clone, Debug)]
struct Record {
    values: Map<String, Value>,
    create_date: NaiveDateTime,
    write_date: NaiveDateTime,
}

#[derive(Default)]
struct Model {
    fields: BTreeMap<String, FieldDef>,
    records: BTreeMap<i64, Record>,
}

/// A webhook rule, as `base.automation` and its "Send Webhook Notification" action hold it.
#[derive(Clone, Debug)]
pub struct Rule {
    pub id: i64,
    pub name: String,
    pub model: String,
    pub trigger: String,
    pub active: bool,
    pub action_id: i64,
    pub action_name: String,
    pub webhook_url: String,
    pub webhook_fields: Vec<String>,
}

/// A `base.automation` record.
#[derive(Clone, Debug)]
struct Automation {
    id: i64,
    name: String,
    model: String,
    trigger: String,
    active: bool,
    action_ids: Vec<i64>,
}

/// An `ir.actions.server` record.
#[derive(Clone, Debug)]
struct Action {
    id: i64,
    name: String,
    model: String,
    state: String,
    webhook_url: String,
    webhook_fields: Vec<String>,
}

#[derive(Default)]
struct Inner {
    database: String,
    /// login → (uid, password or API key)
    users: BTreeMap<String, (i64, String)>,
    models: BTreeMap<String, Model>,
    next_id: i64,
    automations: Vec<Automation>,
    actions: Vec<Action>,
    /// Ids of automations and actions.
    next_meta_id: i64,
    /// Writes to the rules (`create`/`write` on base.automation and ir.actions.server).
    rule_writes: u64,
    /// Every call answered, as `service.method` or `model.method`.
    calls: Vec<String>,
    /// Webhook posts: made, and dropped on purpose.
    posted: u64,
    dropped: u64,
    /// Out of every 1000 webhooks, how many are lost (as a post that timed out would be).
    loss_per_mille: u64,
    rng: u64,
    /// While set, `/jsonrpc` answers 502, as a proxy in front of a stopped Odoo does.
    down: bool,
    /// How long each `/jsonrpc` call takes, as on a busy Odoo.
    delay: Duration,
}

/// The database. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct OdooDb {
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
}

fn datetime_json(t: &NaiveDateTime) -> Value {
    // odoo.tools.json_default / fields.Datetime.to_string: no fraction.
    Value::String(t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn datetime_str(t: &NaiveDateTime) -> Value {
    // Python's str(datetime): a fraction of six digits unless the microseconds are 0.
    Value::String(if t.and_utc().timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    })
}

fn odoo_error(name: &str, message: &str) -> Value {
    json!({"code": 200, "message": "Odoo Server Error", "data": {
        "name": name, "debug": format!("Traceback (most recent call last):\n{name}: {message}\n"),
        "message": message, "arguments": [message], "context": {}}})
}

type RpcResult = Result<Value, Value>;

impl OdooDb {
    /// A database `database` with one user `login` whose API key is `key` (uid 2), and the
    /// models `res.partner` and `sale.order`.
    pub fn new(database: &str, login: &str, key: &str) -> OdooDb {
        let mut inner = Inner {
            database: database.into(),
            next_id: 1,
            next_meta_id: 1,
            rng: 0x9E37_79B9_7F4A_7C15,
            ..Inner::default()
        };
        inner.users.insert(login.into(), (2, key.into()));
        let f = |kind, relation| FieldDef { kind, relation };
        let common = [
            ("create_date", f("datetime", None)),
            ("write_date", f("datetime", None)),
            ("display_name", f("char", None)),
        ];
        let mut partner = Model::default();
        for (name, def) in common.iter().cloned().chain([
            ("name", f("char", None)),
            ("email", f("char", None)),
            ("active", f("boolean", None)),
            ("user_id", f("many2one", Some("res.users"))),
            ("company_id", f("many2one", Some("res.company"))),
        ]) {
            partner.fields.insert(name.into(), def);
        }
        let mut order = Model::default();
        for (name, def) in common.iter().cloned().chain([
            ("name", f("char", None)),
            ("state", f("selection", None)),
            ("partner_id", f("many2one", Some("res.partner"))),
            ("user_id", f("many2one", Some("res.users"))),
            ("amount_total", f("float", None)),
            ("date_order", f("datetime", None)),
            ("company_id", f("many2one", Some("res.company"))),
        ]) {
            order.fields.insert(name.into(), def);
        }
        inner.models.insert("res.partner".into(), partner);
        inner.models.insert("sale.order".into(), order);
        OdooDb {
            inner: Arc::new(Mutex::new(inner)),
            http: reqwest::Client::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loses `per_mille` of every 1000 webhooks from now on, at random (seeded).
    pub fn set_webhook_loss(&self, per_mille: u64, seed: u64) {
        let mut inner = self.lock();
        inner.loss_per_mille = per_mille;
        inner.rng = seed | 1;
    }

    /// While `down`, `/jsonrpc` answers 502.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// (posted, dropped) webhooks so far.
    pub fn webhooks(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.posted, inner.dropped)
    }

    /// Every call answered so far (`common.authenticate`, `sale.order.search_read`, …).
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The webhook rules: each automation with its first webhook action.
    pub fn rules(&self) -> Vec<Rule> {
        self.lock().rules()
    }

    /// How many times a rule was created or changed through `/jsonrpc`.
    pub fn rule_writes(&self) -> u64 {
        self.lock().rule_writes
    }

    /// Adds a webhook rule, as an admin clicking through Odoo's settings would.
    pub fn add_rule(&self, model: &str, trigger: &str, url: &str, fields: &[&str]) -> i64 {
        let mut inner = self.lock();
        let action_id = inner.meta_id();
        let id = inner.meta_id();
        let name = format!("Webhook: {model} {trigger}");
        inner.actions.push(Action {
            id: action_id,
            name: name.clone(),
            model: model.into(),
            state: "webhook".into(),
            webhook_url: url.into(),
            webhook_fields: fields.iter().map(|f| f.to_string()).collect(),
        });
        inner.automations.push(Automation {
            id,
            name,
            model: model.into(),
            trigger: trigger.into(),
            active: true,
            action_ids: vec![action_id],
        });
        id
    }

    /// Archives or restores a rule, as an admin would.
    pub fn set_rule_active(&self, id: i64, active: bool) {
        if let Some(a) = self.lock().automations.iter_mut().find(|a| a.id == id) {
            a.active = active;
        }
    }

    /// The record's values as Odoo holds them (`read` with `load=None`, datetimes as JSON-RPC
    /// writes them), or `None` once deleted.
    pub fn record(&self, model: &str, id: i64) -> Option<Map<String, Value>> {
        let inner = self.lock();
        let m = inner.models.get(model)?;
        let fields: Vec<String> = m.fields.keys().cloned().collect();
        m.records
            .get(&id)
            .map(|r| read_one(m, id, r, &fields, false, datetime_json))
    }

    /// Every record id of `model`.
    pub fn ids(&self, model: &str) -> Vec<i64> {
        let inner = self.lock();
        inner
            .models
            .get(model)
            .map(|m| m.records.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Creates a record without any rule firing: it existed before Smart Sync was connected.
    pub fn insert(&self, model: &str, values: Value) -> i64 {
        let mut inner = self.lock();
        let now = Utc::now().naive_utc();
        let id = inner.next_id;
        inner.next_id += 1;
        let values = as_object(values);
        inner
            .models
            .get_mut(model)
            .expect("a model of the fake")
            .records
            .insert(
                id,
                Record {
                    values,
                    create_date: now,
                    write_date: now,
                },
            );
        id
    }

    /// Creates a record as a user would: the `on_create` rules post, then it commits.
    pub async fn create(&self, model: &str, values: Value) -> i64 {
        let now = Utc::now().naive_utc();
        let record = Record {
            values: as_object(values),
            create_date: now,
            write_date: now,
        };
        let (id, posts) = {
            let mut inner = self.lock();
            let id = inner.next_id;
            inner.next_id += 1;
            let posts =
                inner.webhook_posts(model, id, &record, &["on_create", "on_create_or_write"]);
            (id, posts)
        };
        self.post(posts).await;
        if let Some(m) = self.lock().models.get_mut(model) {
            m.records.insert(id, record);
        }
        id
    }

    /// Writes `values` on a record as a user would: the `on_write` rules post, then it commits.
    pub async fn write(&self, model: &str, id: i64, values: Value) {
        let now = Utc::now().naive_utc();
        let (posts, record) = {
            let mut inner = self.lock();
            let Some(mut record) = inner
                .models
                .get(model)
                .and_then(|m| m.records.get(&id))
                .cloned()
            else {
                return;
            };
            record.values.extend(as_object(values));
            record.write_date = now;
            let posts =
                inner.webhook_posts(model, id, &record, &["on_write", "on_create_or_write"]);
            (posts, record)
        };
        self.post(posts).await;
        if let Some(m) = self.lock().models.get_mut(model) {
            m.records.insert(id, record);
        }
    }

    /// Deletes a record as a user would: the `on_unlink` rules post (the record as it was),
    /// then it commits.
    pub async fn unlink(&self, model: &str, id: i64) {
        self.post_unlink(model, id).await;
        if let Some(m) = self.lock().models.get_mut(model) {
            m.records.remove(&id);
        }
    }

    /// Tries to delete a record that Odoo's checks then refuse (a confirmed sales order): the
    /// `on_unlink` rules post first (base_automation runs them before `unlink` proper), then
    /// the check raises and the transaction rolls back; the record stays.
    pub async fn unlink_refused(&self, model: &str, id: i64) {
        self.post_unlink(model, id).await;
    }

    /// What the `on_unlink` rules post for a record.
    async fn post_unlink(&self, model: &str, id: i64) {
        let posts = {
            let mut inner = self.lock();
            let Some(record) = inner
                .models
                .get(model)
                .and_then(|m| m.records.get(&id))
                .cloned()
            else {
                return;
            };
            inner.webhook_posts(model, id, &record, &["on_unlink"])
        };
        self.post(posts).await;
    }

    /// Deletes a record without any rule firing: a cascade, or a module writing SQL.
    pub fn delete_silently(&self, model: &str, id: i64) {
        if let Some(m) = self.lock().models.get_mut(model) {
            m.records.remove(&id);
        }
    }

    /// Posts each webhook once, with Odoo's one-second timeout; failures are only counted.
    async fn post(&self, posts: Vec<(String, String)>) {
        for (url, body) in posts {
            let _ = self
                .http
                .post(&url)
                .header("Content-Type", "application/json")
                .body(body)
                .timeout(Duration::from_secs(1))
                .send()
                .await;
        }
    }

    /// Answers one JSON-RPC request body.
    pub fn answer(&self, body: &str) -> Option<Value> {
        let request: Value = serde_json::from_str(body).ok()?;
        if request["jsonrpc"] != "2.0" || request["method"] != "call" {
            return None;
        }
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let params = &request["params"];
        let service = params["service"].as_str().unwrap_or("");
        let method = params["method"].as_str().unwrap_or("");
        let args = params["args"].as_array().cloned().unwrap_or_default();
        let result = self.lock().dispatch(service, method, &args);
        Some(match result {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
        })
    }

    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    /// Each `/jsonrpc` call takes `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    pub fn delay(&self) -> Duration {
        self.lock().delay
    }
}

fn as_object(values: Value) -> Map<String, Value> {
    match values {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// One record as `read(fields, load)` gives it; `datetime` renders datetimes.
fn read_one(
    model: &Model,
    id: i64,
    record: &Record,
    fields: &[String],
    classic: bool,
    datetime: fn(&NaiveDateTime) -> Value,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    for name in fields {
        let def = model.fields.get(name);
        let value = match name.as_str() {
            "id" => continue,
            "create_date" => datetime(&record.create_date),
            "write_date" => datetime(&record.write_date),
            "display_name" => record
                .values
                .get("name")
                .cloned()
                .unwrap_or(Value::Bool(false)),
            _ => {
                let value = record
                    .values
                    .get(name)
                    .cloned()
                    .unwrap_or(Value::Bool(false));
                match def.map(|d| d.kind) {
                    Some("many2one") if classic => match value.as_i64() {
                        Some(target) => json!([target, format!("Record {target}")]),
                        None => Value::Bool(false),
                    },
                    _ => value,
                }
            }
        };
        out.insert(name.clone(), value);
    }
    out
}

impl Inner {
    fn meta_id(&mut self) -> i64 {
        let id = self.next_meta_id;
        self.next_meta_id += 1;
        id
    }

    fn rules(&self) -> Vec<Rule> {
        self.automations
            .iter()
            .filter_map(|a| {
                let action = a.action_ids.iter().find_map(|id| {
                    self.actions
                        .iter()
                        .find(|x| x.id == *id && x.state == "webhook")
                })?;
                Some(Rule {
                    id: a.id,
                    name: a.name.clone(),
                    model: a.model.clone(),
                    trigger: a.trigger.clone(),
                    active: a.active,
                    action_id: action.id,
                    action_name: action.name.clone(),
                    webhook_url: action.webhook_url.clone(),
                    webhook_fields: action.webhook_fields.clone(),
                })
            })
            .collect()
    }

    /// The posts the rules of `triggers` on `model` make for `record`, minus those lost.
    fn webhook_posts(
        &mut self,
        model: &str,
        id: i64,
        record: &Record,
        triggers: &[&str],
    ) -> Vec<(String, String)> {
        let rules: Vec<Rule> = self
            .rules()
            .into_iter()
            .filter(|r| r.active && r.model == model && triggers.contains(&r.trigger.as_str()))
            .collect();
        let mut posts = Vec::new();
        for rule in rules {
            let Some(m) = self.models.get(model) else {
                continue;
            };
            let mut vals = Map::new();
            vals.insert("_model".into(), json!(model));
            vals.insert("_id".into(), json!(id));
            vals.insert(
                "_action".into(),
                json!(format!("{}(#{})", rule.action_name, rule.action_id)),
            );
            if !rule.webhook_fields.is_empty() {
                vals.extend(read_one(
                    m,
                    id,
                    record,
                    &rule.webhook_fields,
                    false,
                    datetime_str,
                ));
            }
            // json.dumps(sort_keys=True): serde_json's maps are sorted already.
            let body = Value::Object(vals).to_string();
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            if self.rng % 1000 < self.loss_per_mille {
                self.dropped += 1;
                continue;
            }
            self.posted += 1;
            posts.push((rule.webhook_url.clone(), body));
        }
        posts
    }

    fn dispatch(&mut self, service: &str, method: &str, args: &[Value]) -> RpcResult {
        self.calls.push(format!("{service}.{method}"));
        match (service, method) {
            ("common", "version") => Ok(json!({
                "server_version": "17.0", "server_version_info": [17, 0, 0, "final", 0, ""],
                "server_serie": "17.0", "protocol_version": 1})),
            ("common", "login" | "authenticate") => {
                let db = args.first().and_then(Value::as_str).unwrap_or("");
                let login = args.get(1).and_then(Value::as_str).unwrap_or("");
                let key = args.get(2).and_then(Value::as_str).unwrap_or("");
                if db != self.database {
                    return Err(odoo_error(
                        "psycopg2.OperationalError",
                        &format!(
                            "connection to server failed: FATAL:  database \"{db}\" does not exist"
                        ),
                    ));
                }
                Ok(match self.users.get(login) {
                    Some((uid, secret)) if secret == key => json!(uid),
                    _ => json!(false),
                })
            }
            ("object", "execute_kw") => {
                let db = args.first().and_then(Value::as_str).unwrap_or("");
                let uid = args.get(1).and_then(Value::as_i64).unwrap_or(0);
                let key = args.get(2).and_then(Value::as_str).unwrap_or("");
                let allowed = db == self.database
                    && self
                        .users
                        .values()
                        .any(|(u, secret)| *u == uid && secret == key);
                if !allowed {
                    return Err(odoo_error("odoo.exceptions.AccessDenied", "Access Denied"));
                }
                let model = args.get(3).and_then(Value::as_str).unwrap_or("");
                let method = args.get(4).and_then(Value::as_str).unwrap_or("");
                let positional = args
                    .get(5)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let kwargs = args
                    .get(6)
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                self.calls.push(format!("{model}.{method}"));
                self.execute(model, method, &positional, &kwargs)
            }
            _ => Err(odoo_error(
                "builtins.NameError",
                &format!("method {method:?} of service {service:?} does not exist"),
            )),
        }
    }

    fn execute(
        &mut self,
        model: &str,
        method: &str,
        args: &[Value],
        kwargs: &Map<String, Value>,
    ) -> RpcResult {
        if META_MODELS.contains(&model) {
            return self.execute_meta(model, method, args, kwargs);
        }
        let Some(m) = self.models.get(model) else {
            return Err(odoo_error(
                "odoo.exceptions.UserError",
                &format!("Object {model} doesn't exist"),
            ));
        };
        // search(domain, offset, limit, order), search_read(domain, fields, offset, limit,
        // order): positional or by name.
        let arg = |i: usize, name: &str| -> Value {
            kwargs
                .get(name)
                .cloned()
                .or_else(|| args.get(i).cloned())
                .unwrap_or(Value::Null)
        };
        match method {
            "search" | "search_count" | "search_read" => {
                let domain = arg(0, "domain");
                let (offset, limit, order) = if method == "search_read" {
                    (arg(2, "offset"), arg(3, "limit"), arg(4, "order"))
                } else {
                    (arg(1, "offset"), arg(2, "limit"), arg(3, "order"))
                };
                let active_test = kwargs
                    .get("context")
                    .and_then(|c| c.get("active_test"))
                    .is_none_or(|t| t != &Value::Bool(false));
                // As PostgreSQL would use the primary key: a plain conjunction with `id > n`
                // starts there, and an ascending page stops once full.
                let terms = domain.as_array().cloned().unwrap_or_default();
                let plain = terms.iter().all(Value::is_array);
                let from = terms
                    .iter()
                    .filter(|t| plain && t[0] == "id" && t[1] == ">")
                    .filter_map(|t| t[2].as_i64())
                    .max()
                    .unwrap_or(0);
                let ascending = matches!(order.as_str().map(str::trim), None | Some("id asc" | "id" | ""));
                let enough = (method != "search_count" && ascending)
                    .then(|| {
                        limit.as_u64().map(|l| {
                            (l as usize).saturating_add(offset.as_u64().unwrap_or(0) as usize)
                        })
                    })
                    .flatten()
                    .unwrap_or(usize::MAX);
                let mut ids = Vec::new();
                for (id, record) in m.records.range(from.saturating_add(1)..) {
                    if ids.len() >= enough {
                        break;
                    }
                    let archived = record.values.get("active") == Some(&Value::Bool(false));
                    if active_test && archived && m.fields.contains_key("active") {
                        continue;
                    }
                    if matches(m, *id, record, &domain)? {
                        ids.push(*id);
                    }
                }
                if method == "search_count" {
                    return Ok(json!(ids.len()));
                }
                match order.as_str().map(str::trim) {
                    None | Some("id asc") | Some("id") | Some("") => {}
                    Some("id desc") => ids.reverse(),
                    Some(other) => {
                        return Err(odoo_error(
                            "builtins.ValueError",
                            &format!("the fake orders by id only, not {other:?}"),
                        ));
                    }
                }
                let offset = offset.as_u64().unwrap_or(0) as usize;
                let ids: Vec<i64> = ids
                    .into_iter()
                    .skip(offset)
                    .take(limit.as_u64().map(|l| l as usize).unwrap_or(usize::MAX))
                    .collect();
                if method == "search" {
                    return Ok(json!(ids));
                }
                let fields = field_list(m, &arg(1, "fields"))?;
                let classic = kwargs.get("load").is_none_or(|l| l == "_classic_read");
                let records: Vec<Value> = ids
                    .iter()
                    .map(|id| {
                        Value::Object(read_one(m, *id, &m.records[id], &fields, classic, datetime_json))
                    })
                    .collect();
                Ok(Value::Array(records))
            }
            "read" => {
                let ids: Vec<i64> = arg(0, "ids")
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                let fields = field_list(m, &arg(1, "fields"))?;
                let classic = kwargs.get("load").is_none_or(|l| l == "_classic_read");
                Ok(Value::Array(
                    ids.iter()
                        .filter_map(|id| m.records.get(id).map(|r| (id, r)))
                        .map(|(id, r)| Value::Object(read_one(m, *id, r, &fields, classic, datetime_json)))
                        .collect(),
                ))
            }
            "fields_get" => Ok(Value::Object(
                m.fields
                    .iter()
                    .map(|(name, def)| {
                        let mut attrs = json!({"type": def.kind, "string": name, "store": name != "display_name"});
                        if let Some(relation) = def.relation {
                            attrs["relation"] = json!(relation);
                        }
                        (name.clone(), attrs)
                    })
                    .collect(),
            )),
            other => Err(odoo_error(
                "builtins.AttributeError",
                &format!("The method '{other}' does not exist on the model '{model}'"),
            )),
        }
    }
}

/// The models the fake keeps as settings rather than records.
const META_MODELS: [&str; 4] = [
    "ir.model",
    "ir.model.fields",
    "base.automation",
    "ir.actions.server",
];

impl Inner {
    /// The id of `ir.model` for `model`.
    fn model_id(&self, model: &str) -> Option<i64> {
        self.models
            .keys()
            .position(|m| m == model)
            .map(|i| 1000 + i as i64)
    }

    fn model_of(&self, id: i64) -> Option<String> {
        self.models
            .keys()
            .find(|m| self.model_id(m) == Some(id))
            .cloned()
    }

    /// The id of `ir.model.fields` for `model.field`.
    fn field_id(&self, model: &str, field: &str) -> Option<i64> {
        let base = self.model_id(model)? * 1000;
        let position = self
            .models
            .get(model)?
            .fields
            .keys()
            .position(|f| f == field)?;
        Some(base + position as i64)
    }

    fn field_name(&self, id: i64) -> Option<String> {
        let model = self.model_of(id / 1000)?;
        self.models
            .get(&model)?
            .fields
            .keys()
            .nth((id % 1000) as usize)
            .cloned()
    }

    /// Every record of a settings model, as `read(load=None)` gives it.
    fn meta_records(&self, model: &str) -> Vec<Map<String, Value>> {
        let object = |v: Value| as_object(v);
        match model {
            "ir.model" => self
                .models
                .keys()
                .filter_map(|m| {
                    let id = self.model_id(m)?;
                    Some(object(json!({"id": id, "model": m, "name": m})))
                })
                .collect(),
            "ir.model.fields" => self
                .models
                .iter()
                .flat_map(|(m, data)| {
                    data.fields.iter().filter_map(move |(name, def)| {
                        Some(object(json!({"id": self.field_id(m, name)?, "name": name,
                            "model": m, "model_id": self.model_id(m)?, "ttype": def.kind})))
                    })
                })
                .collect(),
            "base.automation" => self
                .automations
                .iter()
                .map(|a| {
                    object(
                        json!({"id": a.id, "name": a.name, "model_id": self.model_id(&a.model),
                        "model_name": a.model, "trigger": a.trigger, "active": a.active,
                        "action_server_ids": a.action_ids, "trigger_field_ids": [],
                        "filter_domain": false}),
                    )
                })
                .collect(),
            _ => self
                .actions
                .iter()
                .map(|x| {
                    let field_ids: Vec<i64> = x
                        .webhook_fields
                        .iter()
                        .filter_map(|f| self.field_id(&x.model, f))
                        .collect();
                    let automation = self
                        .automations
                        .iter()
                        .find(|a| a.action_ids.contains(&x.id))
                        .map(|a| a.id);
                    object(
                        json!({"id": x.id, "name": x.name, "model_id": self.model_id(&x.model),
                        "state": x.state, "webhook_url": x.webhook_url,
                        "webhook_field_ids": field_ids, "usage": "base_automation",
                        "base_automation_id": automation}),
                    )
                })
                .collect(),
        }
    }

    fn execute_meta(
        &mut self,
        model: &str,
        method: &str,
        args: &[Value],
        kwargs: &Map<String, Value>,
    ) -> RpcResult {
        let arg = |i: usize, name: &str| -> Value {
            kwargs
                .get(name)
                .cloned()
                .or_else(|| args.get(i).cloned())
                .unwrap_or(Value::Null)
        };
        match method {
            "search_read" | "search" | "read" => {
                let rows = self.meta_records(model);
                let wanted: Option<Vec<i64>> = (method == "read").then(|| {
                    arg(0, "ids")
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_i64).collect())
                        .unwrap_or_default()
                });
                let domain = if method == "read" {
                    json!([])
                } else {
                    arg(0, "domain")
                };
                let mut out = Vec::new();
                for row in rows {
                    let id = row["id"].as_i64().unwrap_or(0);
                    if wanted.as_ref().is_some_and(|w| !w.contains(&id)) {
                        continue;
                    }
                    if matches_map(&row, &domain)? {
                        out.push(row);
                    }
                }
                if method == "search" {
                    return Ok(json!(
                        out.iter().map(|r| r["id"].clone()).collect::<Vec<_>>()
                    ));
                }
                let fields: Vec<String> = arg(1, "fields")
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Value::Array(
                    out.into_iter()
                        .map(|row| {
                            let mut kept = Map::new();
                            kept.insert("id".into(), row["id"].clone());
                            for f in &fields {
                                kept.insert(
                                    f.clone(),
                                    row.get(f).cloned().unwrap_or(Value::Bool(false)),
                                );
                            }
                            Value::Object(if fields.is_empty() { row } else { kept })
                        })
                        .collect(),
                ))
            }
            "create" if model == "base.automation" => {
                self.rule_writes += 1;
                let vals = arg(0, "vals_list");
                let vals = vals.as_object().cloned().unwrap_or_default();
                let model_name = vals
                    .get("model_id")
                    .and_then(Value::as_i64)
                    .and_then(|id| self.model_of(id))
                    .ok_or_else(|| {
                        odoo_error("odoo.exceptions.ValidationError", "Model is required")
                    })?;
                let mut action_ids = Vec::new();
                for command in vals
                    .get("action_server_ids")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    // (0, 0, values): create.
                    let values = command
                        .get(2)
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    let id = self.meta_id();
                    let fields = self.command_fields(values.get("webhook_field_ids"), &[]);
                    self.actions.push(Action {
                        id,
                        name: values
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                        model: model_name.clone(),
                        state: values
                            .get("state")
                            .and_then(Value::as_str)
                            .unwrap_or("code")
                            .into(),
                        webhook_url: values
                            .get("webhook_url")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                        webhook_fields: fields,
                    });
                    action_ids.push(id);
                }
                let id = self.meta_id();
                self.automations.push(Automation {
                    id,
                    name: vals
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    model: model_name,
                    trigger: vals
                        .get("trigger")
                        .and_then(Value::as_str)
                        .unwrap_or("on_create_or_write")
                        .into(),
                    active: vals.get("active").and_then(Value::as_bool).unwrap_or(true),
                    action_ids,
                });
                Ok(json!(id))
            }
            "write" if model == "base.automation" || model == "ir.actions.server" => {
                self.rule_writes += 1;
                let ids: Vec<i64> = arg(0, "ids")
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                let vals = arg(1, "vals").as_object().cloned().unwrap_or_default();
                for id in ids {
                    if model == "base.automation" {
                        let Some(a) = self.automations.iter_mut().find(|a| a.id == id) else {
                            return Err(odoo_error(
                                "odoo.exceptions.MissingError",
                                "Record does not exist or has been deleted.",
                            ));
                        };
                        if let Some(active) = vals.get("active").and_then(Value::as_bool) {
                            a.active = active;
                        }
                        if let Some(trigger) = vals.get("trigger").and_then(Value::as_str) {
                            a.trigger = trigger.into();
                        }
                    } else {
                        let Some(current) = self.actions.iter().find(|x| x.id == id).cloned()
                        else {
                            return Err(odoo_error(
                                "odoo.exceptions.MissingError",
                                "Record does not exist or has been deleted.",
                            ));
                        };
                        let fields = self
                            .command_fields(vals.get("webhook_field_ids"), &current.webhook_fields);
                        let x = self
                            .actions
                            .iter_mut()
                            .find(|x| x.id == id)
                            .expect("found above");
                        if let Some(url) = vals.get("webhook_url").and_then(Value::as_str) {
                            x.webhook_url = url.into();
                        }
                        x.webhook_fields = fields;
                    }
                }
                Ok(json!(true))
            }
            other => Err(odoo_error(
                "odoo.exceptions.AccessError",
                &format!("the fake does not allow {model}.{other}"),
            )),
        }
    }

    /// Field names after x2many commands (`[6, 0, ids]` replaces; absent keeps `current`).
    fn command_fields(&self, commands: Option<&Value>, current: &[String]) -> Vec<String> {
        let Some(commands) = commands.and_then(Value::as_array) else {
            return current.to_vec();
        };
        let mut names = current.to_vec();
        for command in commands {
            if command.get(0).and_then(Value::as_i64) == Some(6) {
                names = command
                    .get(2)
                    .and_then(Value::as_array)
                    .map(|ids| {
                        ids.iter()
                            .filter_map(Value::as_i64)
                            .filter_map(|id| self.field_name(id))
                            .collect()
                    })
                    .unwrap_or_default();
            }
        }
        names
    }
}

/// Whether a settings record matches a domain of `=`, `!=`, `in` and `like` leaves (implicit
/// `&` only).
fn matches_map(row: &Map<String, Value>, domain: &Value) -> Result<bool, Value> {
    for term in domain.as_array().cloned().unwrap_or_default() {
        let invalid = || odoo_error("builtins.ValueError", &format!("Invalid leaf {term}"));
        let parts = term.as_array().ok_or_else(invalid)?;
        let (Some(field), Some(op), Some(value)) = (
            parts.first().and_then(Value::as_str),
            parts.get(1).and_then(Value::as_str),
            parts.get(2),
        ) else {
            return Err(invalid());
        };
        let stored = row.get(field).cloned().unwrap_or(Value::Bool(false));
        let ok = match op {
            "=" => &stored == value,
            "!=" => &stored != value,
            "in" => value.as_array().is_some_and(|a| a.contains(&stored)),
            "like" | "ilike" => stored
                .as_str()
                .zip(value.as_str())
                .is_some_and(|(s, v)| s.to_lowercase().contains(&v.to_lowercase())),
            _ => return Err(invalid()),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn field_list(model: &Model, fields: &Value) -> Result<Vec<String>, Value> {
    let fields: Vec<String> = match fields.as_array() {
        Some(list) if !list.is_empty() => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => model.fields.keys().cloned().collect(),
    };
    if let Some(bad) = fields
        .iter()
        .find(|f| f.as_str() != "id" && !model.fields.contains_key(f.as_str()))
    {
        return Err(odoo_error(
            "builtins.ValueError",
            &format!("Invalid field {bad:?} on model"),
        ));
    }
    Ok(fields)
}

/// Whether the record matches the domain (Polish notation, implicit `&`).
fn matches(model: &Model, id: i64, record: &Record, domain: &Value) -> Result<bool, Value> {
    let terms = domain.as_array().cloned().unwrap_or_default();
    let mut stack: Vec<bool> = Vec::new();
    for term in terms.iter().rev() {
        match term.as_str() {
            Some("&") | Some("|") => {
                let (a, b) = (stack.pop(), stack.pop());
                let (Some(a), Some(b)) = (a, b) else {
                    return Err(odoo_error("builtins.ValueError", "Invalid domain"));
                };
                stack.push(if term == "&" { a && b } else { a || b });
            }
            Some("!") => {
                let a = stack
                    .pop()
                    .ok_or_else(|| odoo_error("builtins.ValueError", "Invalid domain"))?;
                stack.push(!a);
            }
            _ => stack.push(leaf(model, id, record, term)?),
        }
    }
    Ok(stack.into_iter().all(|b| b))
}

fn leaf(model: &Model, id: i64, record: &Record, term: &Value) -> Result<bool, Value> {
    let invalid = || odoo_error("builtins.ValueError", &format!("Invalid leaf {term}"));
    let parts = term.as_array().ok_or_else(invalid)?;
    let (Some(field), Some(op), Some(value)) = (
        parts.first().and_then(Value::as_str),
        parts.get(1).and_then(Value::as_str),
        parts.get(2),
    ) else {
        return Err(invalid());
    };
    use std::cmp::Ordering;
    let compare = |a: Ordering| -> Result<bool, Value> {
        Ok(match op {
            "=" => a == Ordering::Equal,
            "!=" => a != Ordering::Equal,
            ">" => a == Ordering::Greater,
            ">=" => a != Ordering::Less,
            "<" => a == Ordering::Less,
            "<=" => a != Ordering::Greater,
            _ => return Err(invalid()),
        })
    };
    match field {
        "id" => match op {
            "in" | "not in" => {
                let list = value.as_array().ok_or_else(invalid)?;
                let found = list.iter().any(|v| v.as_i64() == Some(id));
                Ok(found == (op == "in"))
            }
            _ => compare(id.cmp(&value.as_i64().ok_or_else(invalid)?)),
        },
        "write_date" | "create_date" => {
            let stored = if field == "write_date" {
                record.write_date
            } else {
                record.create_date
            };
            let text = value.as_str().ok_or_else(invalid)?;
            let given = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .map_err(|_| invalid())?;
            compare(stored.cmp(&given))
        }
        other if model.fields.contains_key(other) => {
            let stored = record
                .values
                .get(other)
                .cloned()
                .unwrap_or(Value::Bool(false));
            match op {
                "=" => Ok(&stored == value),
                "!=" => Ok(&stored != value),
                _ => Err(invalid()),
            }
        }
        _ => Err(odoo_error(
            "builtins.ValueError",
            &format!("Invalid field {field:?} in leaf {term}"),
        )),
    }
}
