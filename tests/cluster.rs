//! The local control plane (tests/cluster/up.sh) is a real one: watches deliver changes,
//! kube-controller-manager finalizes namespaces and makes ServiceAccounts, CRDs are served with
//! their schema, TokenRequest issues working ServiceAccount tokens and RBAC is enforced.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch,
    PatchParams, PostParams,
};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use support::TestNamespace;

const TIMEOUT: Duration = Duration::from_secs(60);

fn api_error_code(result: Result<impl std::fmt::Debug, kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error status, got {other:?}"),
    }
}

/// Reads the watch until it shows the ConfigMap with `message` = `want`.
async fn watch_until_message<S>(stream: &mut S, want: &str)
where
    S: Stream<Item = Result<ConfigMap, watcher::Error>> + Unpin,
{
    let seen = tokio::time::timeout(TIMEOUT, async {
        while let Some(cm) = stream.try_next().await.expect("watch failed") {
            let message = cm.data.as_ref().and_then(|d| d.get("message")).cloned();
            if message.as_deref() == Some(want) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen,
        Ok(true),
        "the watch did not show message={want} within {TIMEOUT:?}"
    );
}

#[tokio::test]
async fn watch_sees_a_configmap_and_the_namespace_controller_finalizes_its_namespace() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "watch").await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let created = namespaces.get(ns.name()).await.unwrap();
    let finalizers = created.spec.and_then(|s| s.finalizers).unwrap_or_default();
    assert!(
        finalizers.iter().any(|f| f == "kubernetes"),
        "a new namespace carries the `kubernetes` finalizer, which only the namespace controller removes; got {finalizers:?}"
    );

    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let mut stream = watcher(
        configmaps.clone(),
        watcher::Config::default().fields("metadata.name=greeting"),
    )
    .applied_objects()
    .boxed();
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("greeting".into()),
            ..ObjectMeta::default()
        },
        data: Some([("message".to_owned(), "hello".to_owned())].into()),
        ..ConfigMap::default()
    };
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    watch_until_message(&mut stream, "hello").await;
    // A change made after the watch started arrives as an event, not through the initial list.
    configmaps
        .patch(
            "greeting",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"message": "changed"}})),
        )
        .await
        .unwrap();
    watch_until_message(&mut stream, "changed").await;
    drop(stream);

    let name = ns.name().to_owned();
    ns.cleanup().await;
    support::wait_for(
        TIMEOUT,
        &format!("namespace {name} to be emptied, finalized and gone"),
        || async { namespaces.get_opt(&name).await.unwrap().is_none() },
    )
    .await;
}

#[tokio::test]
async fn a_custom_resource_definition_is_served_with_its_schema() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "crd").await;
    // Unique names: a CRD is cluster-wide, and a cluster may be shared by several test runs.
    let suffix: String = support::unique_name("w")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let plural = format!("{suffix}s");
    let kind = format!("Widget{suffix}");
    let crd_name = format!("{plural}.test.recur.dev");
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": crd_name, "labels": {support::TEST_LABEL: "true"}},
        "spec": {
            "group": "test.recur.dev",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": suffix, "kind": kind},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1},
                            "colour": {"type": "string"}
                        }
                    }}
                }}
            }]
        }
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    tokio::time::timeout(
        TIMEOUT,
        await_condition(crds.clone(), &crd_name, conditions::is_crd_established()),
    )
    .await
    .unwrap_or_else(|_| panic!("CRD {crd_name} not Established within {TIMEOUT:?}"))
    .unwrap();

    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.recur.dev", "v1", &kind),
        &plural,
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &resource);
    let spec = json!({"size": 3, "colour": "blue"});
    let widget = DynamicObject::new("first", &resource).data(json!({ "spec": spec }));
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();
    let back = widgets.get("first").await.unwrap();
    assert_eq!(back.data["spec"], spec);
    assert_eq!(back.metadata.namespace.as_deref(), Some(ns.name()));

    let listed = widgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);

    // The schema is enforced: a string where an integer belongs is rejected as invalid.
    let bad = DynamicObject::new("bad", &resource).data(json!({"spec": {"size": "big"}}));
    assert_eq!(
        api_error_code(widgets.create(&PostParams::default(), &bad).await),
        422
    );

    crds.delete(&crd_name, &DeleteParams::default())
        .await
        .unwrap();
    ns.cleanup().await;
}

/// A client of the test cluster that authenticates with `token` instead of the admin's.
async fn client_with_token(token: String) -> Client {
    let mut config = support::config().await;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..kube::config::AuthInfo::default()
    };
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn a_service_account_token_authenticates_and_rbac_limits_it() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "rbac").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns.name());
    // kube-controller-manager's serviceaccount controller gives each namespace a `default` one.
    support::wait_for(
        TIMEOUT,
        &format!("ServiceAccount default in namespace {}", ns.name()),
        || async { accounts.get_opt("default").await.unwrap().is_some() },
    )
    .await;

    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request("reader", &PostParams::default(), &request)
        .await
        .unwrap();
    let token = issued
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .expect("TokenRequest returned no token");
    let reader = client_with_token(token).await;

    // The apiserver accepts the token and knows who it belongs to ...
    let review = Api::<SelfSubjectReview>::all(reader.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username);
    assert_eq!(
        username,
        Some(format!("system:serviceaccount:{}:reader", ns.name()))
    );

    // ... and RBAC forbids what no role grants (403, not 401: authenticated, not authorized).
    let secrets: Api<Secret> = Api::namespaced(reader.clone(), ns.name());
    assert_eq!(
        api_error_code(secrets.list(&ListParams::default()).await),
        403
    );
    let reader_configmaps: Api<ConfigMap> = Api::namespaced(reader.clone(), ns.name());
    assert_eq!(
        api_error_code(reader_configmaps.list(&ListParams::default()).await),
        403
    );

    // A Role and RoleBinding grant exactly listing ConfigMaps; Secrets stay forbidden.
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "configmap-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "reader-reads-configmaps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns.name()}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The authorizer learns of new bindings through its informers: a short delay is normal.
    support::wait_for(
        TIMEOUT,
        "the RoleBinding to let the ServiceAccount list ConfigMaps",
        || async { reader_configmaps.list(&ListParams::default()).await.is_ok() },
    )
    .await;
    assert_eq!(
        api_error_code(secrets.list(&ListParams::default()).await),
        403
    );

    ns.cleanup().await;
}

/// recur's `--initial-list=auto` asks the apiserver once whether it serves streaming lists; this
/// one does (WatchList is on by default since 1.34), and a streaming watcher and a paged one
/// (pages of 40, so the list takes several requests) fill their caches with the same objects.
#[tokio::test]
async fn streaming_and_paged_lists_fill_the_cache_with_the_same_objects() {
    use recur::api::RecurringTask;
    use recur::controller::initial_list::{InitialList, resolve};

    tokio::task::spawn_blocking(support::stack::install_crds)
        .await
        .unwrap();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "initial-list").await;
    let api: Api<RecurringTask> = Api::namespaced(client.clone(), ns.name());
    assert_eq!(
        resolve(&api, "RecurringTask", InitialList::Auto).await,
        InitialList::Streaming
    );
    assert_eq!(
        resolve(&api, "RecurringTask", InitialList::Paged).await,
        InitialList::Paged
    );
    let mut want = std::collections::BTreeSet::new();
    for i in 0..150 {
        let name = format!("t{i:03}");
        let task: RecurringTask = serde_json::from_value(json!({
            "apiVersion": "recur.dev/v1alpha1", "kind": "RecurringTask",
            "metadata": {"name": name},
            "spec": {"userId": "u", "title": "t", "schedule": {"every": "1h"}},
        }))
        .unwrap();
        api.create(&PostParams::default(), &task).await.unwrap();
        want.insert(name);
    }
    for (how, config) in [
        (
            "streaming",
            watcher::Config::default().any_semantic().streaming_lists(),
        ),
        (
            "paged",
            watcher::Config::default().any_semantic().page_size(40),
        ),
    ] {
        let (reader, writer) = kube::runtime::reflector::store::<RecurringTask>();
        let stream = kube::runtime::reflector(writer, watcher(api.clone(), config));
        let drive = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
        tokio::time::timeout(Duration::from_secs(30), reader.wait_until_ready())
            .await
            .unwrap_or_else(|_| panic!("{how}: the cache never held a full list"))
            .unwrap();
        let got: std::collections::BTreeSet<String> = reader
            .state()
            .iter()
            .filter_map(|t| t.metadata.name.clone())
            .collect();
        drive.abort();
        assert_eq!(got, want, "{how}");
    }
    ns.cleanup().await;
}
