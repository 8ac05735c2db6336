//! `switchyard topology users`: one broker user per role, with least privilege
//! (`switchyard_amqp::roles`), shown and, with `--apply`, created through the management API.

use anyhow::Context as _;
use serde::Serialize;
use switchyard_amqp::roles::Role;
use switchyard_config::Config;
use switchyard_core::Name;

use crate::output::{json, print_line, table};
use crate::topology::{Management, configured, segment};

/// What `topology users` was asked.
#[derive(Debug, Clone)]
pub struct UsersOptions {
    /// Create or update the users and their permissions (else only show them).
    pub apply: bool,
    /// The management API (default: beside the broker, port 15672).
    pub management_url: Option<String>,
    /// Prefix of every user name.
    pub user_prefix: String,
    /// Prefix of the core app's own queues.
    pub app_prefix: String,
    /// JSON output.
    pub json: bool,
}

/// One user as shown.
#[derive(Debug, Serialize)]
struct UserRow {
    user: String,
    role: String,
    configure: String,
    write: String,
    read: String,
    /// Where its password came from, after `--apply`: `env`, `generated` (printed once),
    /// `kept` (the user existed and no new password was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'static str>,
    /// A generated password, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    generated_password: Option<String>,
    /// The variable that gives its password.
    password_env: String,
}

/// The variable that gives a role's password, e.g. `SWITCHYARD_BROKER_PASSWORD_WORKER_PAYMENT`.
pub fn password_env(role: &Role) -> String {
    format!(
        "SWITCHYARD_BROKER_PASSWORD_{}",
        role.to_string().to_ascii_uppercase().replace('-', "_")
    )
}

/// Runs `switchyard topology users`.
pub async fn run(config: &Config, opts: UsersOptions) -> anyhow::Result<()> {
    let kinds: Vec<Name> = configured(config)?.providers().keys().cloned().collect();
    let roles = Role::all(&kinds, &opts.app_prefix);
    let mut rows = Vec::new();
    let management = match opts.apply {
        true => Some(Management::for_amqp(
            config.amqp.first_broker_url().expose(),
            opts.management_url.clone(),
        )?),
        false => None,
    };
    let http = reqwest::Client::new();
    for role in &roles {
        let p = role.permissions();
        let mut row = UserRow {
            user: role.user(&opts.user_prefix),
            role: role.to_string(),
            configure: p.configure.clone(),
            write: p.write.clone(),
            read: p.read.clone(),
            password: None,
            generated_password: None,
            password_env: password_env(role),
        };
        if let Some(m) = &management {
            apply_one(&http, m, role, &mut row).await?;
        }
        rows.push(row);
    }
    if opts.json {
        return json(&rows);
    }
    print_line(&table(
        &["user", "configure", "write", "read"],
        rows.iter().map(|r| {
            vec![
                r.user.clone(),
                r.configure.clone(),
                r.write.clone(),
                r.read.clone(),
            ]
        }),
    ));
    for r in &rows {
        if let Some(pw) = &r.generated_password {
            print_line(&format!(
                "{}: generated password {pw} (shown once; set {} to choose one)",
                r.user, r.password_env
            ));
        }
    }
    if !opts.apply {
        print_line("nothing changed: --apply creates these users and sets their permissions");
    }
    Ok(())
}

/// Creates or updates one user and sets its permissions on the vhost.
async fn apply_one(
    http: &reqwest::Client,
    m: &Management,
    role: &Role,
    row: &mut UserRow,
) -> anyhow::Result<()> {
    let user_url = format!("{}/api/users/{}", m.url, segment(&row.user));
    let exists = http
        .get(&user_url)
        .basic_auth(&m.user, Some(&m.password))
        .send()
        .await
        .with_context(|| format!("the management API at {}", m.url))?
        .status()
        .is_success();
    let password = match std::env::var(password_env(role)) {
        Ok(pw) if !pw.is_empty() => Some(("env", pw)),
        _ if exists => None,
        _ => {
            let pw = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            row.generated_password = Some(pw.clone());
            Some(("generated", pw))
        }
    };
    row.password = Some(password.as_ref().map_or("kept", |(from, _)| *from));
    if let Some((_, pw)) = password {
        let user = serde_json::json!({"password": pw, "tags": role.tags()});
        put(
            http,
            m,
            &user_url,
            &user,
            &format!("creating user {}", row.user),
        )
        .await?;
    }
    let permissions = serde_json::json!({
        "configure": row.configure, "write": row.write, "read": row.read
    });
    let url = format!(
        "{}/api/permissions/{}/{}",
        m.url,
        segment(&m.vhost),
        segment(&row.user)
    );
    put(
        http,
        m,
        &url,
        &permissions,
        &format!("setting permissions of {}", row.user),
    )
    .await
}

/// One PUT to the management API as its user; an answer other than 2xx is an error naming
/// what was being done.
async fn put(
    http: &reqwest::Client,
    m: &Management,
    url: &str,
    body: &serde_json::Value,
    doing: &str,
) -> anyhow::Result<()> {
    let r = http
        .put(url)
        .basic_auth(&m.user, Some(&m.password))
        .json(body)
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "{doing}: the management API answered {}",
        r.status()
    );
    Ok(())
}
