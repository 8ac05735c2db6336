//! Throwaway virtual hosts.

use std::time::Duration;

use uuid::Uuid;

/// The management API base URL (`SWITCHYARD_TEST_MANAGEMENT_URL`, default
/// `http://127.0.0.1:15672`, user guest/guest).
pub fn management_url() -> String {
    std::env::var("SWITCHYARD_TEST_MANAGEMENT_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:15672".into())
}

const HOW_TO_START: &str = "RabbitMQ with the management plugin must be running for this test.\n\
    Start it with `./dev test` (which starts and configures it), or by hand:\n  \
    rabbitmq-server -detached && rabbitmq-plugins enable rabbitmq_management rabbitmq_prometheus\n\
    or `docker compose up -d rabbitmq`.";

/// A virtual host that exists for one test.
#[derive(Debug, Clone)]
pub struct TestVhost {
    /// Its name.
    pub name: String,
    /// An AMQP URL for it (on a cluster, one per node, separated by commas).
    pub amqp_url: String,
    http: reqwest::Client,
    management: String,
}

impl TestVhost {
    /// Creates a fresh vhost with full permissions for guest. Panics with instructions when
    /// the broker is not reachable.
    pub async fn create() -> Self {
        Self::create_on(&management_url(), &["127.0.0.1:5672"]).await
    }

    /// Creates a fresh vhost through the management API at `management`, reached over AMQP at
    /// each of `amqp_hosts` (`host:port`, the nodes of a cluster).
    pub async fn create_on(management: &str, amqp_hosts: &[&str]) -> Self {
        switchyard_http::install_crypto_provider();
        let name = format!("switchyard-test-{}", Uuid::new_v4().simple());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let base = management.to_owned();
        let put = |path: String, body: serde_json::Value| {
            let http = http.clone();
            let url = format!("{base}{path}");
            async move {
                http.put(url)
                    .basic_auth("guest", Some("guest"))
                    .json(&body)
                    .send()
                    .await
            }
        };
        let created = put(format!("/api/vhosts/{name}"), serde_json::json!({})).await;
        match created {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => panic!("cannot create vhost {name}: {}\n{HOW_TO_START}", r.status()),
            Err(e) => panic!("RabbitMQ management API unreachable at {base}: {e}\n{HOW_TO_START}"),
        }
        let perms = put(
            format!("/api/permissions/{name}/guest"),
            serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await
        .expect("set permissions");
        assert!(
            perms.status().is_success(),
            "set permissions: {}",
            perms.status()
        );
        let amqp_url = amqp_hosts
            .iter()
            .map(|host| format!("amqp://guest:guest@{host}/{name}"))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            name,
            amqp_url,
            http,
            management: management.to_owned(),
        }
    }

    /// Deletes the vhost and everything in it.
    pub async fn delete(&self) {
        let _ = self
            .http
            .delete(format!("{}/api/vhosts/{}", self.management, self.name))
            .basic_auth("guest", Some("guest"))
            .send()
            .await;
    }

    /// The broker's names of this vhost's connections whose client named them
    /// `connection_name`, from the management API (whose listing lags a few seconds).
    pub async fn connections_named(&self, connection_name: &str) -> Vec<String> {
        let listed: Option<serde_json::Value> = async {
            self.http
                .get(format!(
                    "{}/api/vhosts/{}/connections",
                    self.management, self.name
                ))
                .basic_auth("guest", Some("guest"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()
        }
        .await;
        let mut names: Vec<String> = listed
            .as_ref()
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter(|c| c["client_properties"]["connection_name"] == connection_name)
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    /// Closes the connection the broker calls `name`, as a network failure or an operator
    /// would: the broker returns its unacknowledged deliveries to their queues at once.
    pub async fn close_connection(&self, name: &str) {
        let mut url = reqwest::Url::parse(&self.management).expect("management URL");
        url.path_segments_mut()
            .expect("a base URL")
            .extend(["api", "connections", name]);
        let r = self
            .http
            .delete(url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .expect("management API");
        assert!(
            r.status().is_success(),
            "closing connection {name}: {}",
            r.status()
        );
    }

    /// A queue's message count, from the management API.
    pub async fn queue_messages(&self, queue: &str) -> Option<u64> {
        let r = self
            .http
            .get(format!(
                "{}/api/queues/{}/{}",
                self.management, self.name, queue
            ))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        v.get("messages").and_then(|m| m.as_u64())
    }
}
