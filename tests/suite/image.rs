//! The base image against a real engine: build + load it offline, then run a container from it.

use std::time::Instant;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StartContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use stockade::backend::docker::image::{self, ImageError};

const TEST_LABEL: &str = "org.stockade.test";

/// A negotiated client, or `None` (with the reason printed) when no engine answers,
/// unless STOCKADE_REQUIRE_DOCKER=1 makes that a failure.
async fn docker_or_skip(test: &str) -> Option<Docker> {
    let probe = async {
        let docker = Docker::connect_with_local_defaults()?
            .negotiate_version()
            .await?;
        docker.ping().await?;
        Ok::<_, bollard::errors::Error>(docker)
    };
    match probe.await {
        Ok(docker) => Some(docker),
        Err(err) if std::env::var("STOCKADE_REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!("{test}: STOCKADE_REQUIRE_DOCKER=1 but the engine is unreachable: {err}")
        }
        Err(err) => {
            eprintln!("skipping {test}: no docker engine ({err})");
            None
        }
    }
}

/// Runs `script` under bash in a fresh container (network none) and returns (exit code, output).
async fn run_in_image(docker: &Docker, image: &str, script: &str) -> (i64, String) {
    let name = format!("stockade-test-image-{}", uuid::Uuid::new_v4().simple());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["bash".into(), "-c".into(), script.into()]),
        labels: Some([(TEST_LABEL.to_string(), "1".to_string())].into()),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    docker
        .create_container(Some(options), body)
        .await
        .expect("create container");
    let outcome = async {
        docker
            .start_container(&name, None::<StartContainerOptions>)
            .await?;
        let mut wait = docker.wait_container(&name, None::<WaitContainerOptions>);
        let code = match wait.next().await {
            Some(Ok(response)) => response.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(err)) => return Err(err),
            None => -1,
        };
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = docker.logs(&name, Some(options));
        let mut output = String::new();
        while let Some(chunk) = logs.next().await {
            output.push_str(&chunk?.to_string());
        }
        Ok((code, output))
    }
    .await;
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    docker
        .remove_container(&name, Some(remove))
        .await
        .expect("remove container");
    outcome.expect("run container")
}

#[tokio::test]
async fn base_image_builds_offline_and_runs() {
    let Some(docker) = docker_or_skip("base_image_builds_offline_and_runs").await else {
        return;
    };
    let reference = image::base_image_ref();
    let started = Instant::now();
    let id = image::build_base_image(
        &docker,
        &super::common::TEST_INCLUDE.map(String::from),
        &mut |line| eprintln!("{line}"),
    )
    .await
    .expect("build base image");
    eprintln!("build+import: {:.2} s", started.elapsed().as_secs_f64());

    let inspected = docker.inspect_image(&reference).await.expect("inspect");
    assert_eq!(inspected.id.as_deref(), Some(id.as_str()));
    eprintln!("image size: {} bytes", inspected.size.unwrap_or_default());
    let config = inspected.config.expect("image config");
    assert_eq!(config.user.as_deref(), Some("65532:65532"));
    assert_eq!(config.working_dir.as_deref(), Some("/workspace"));
    let labels = config.labels.expect("labels");
    assert_eq!(labels[image::LABEL_BASE], env!("CARGO_PKG_VERSION"));
    assert!(labels[image::LABEL_ROOTFS].starts_with("sha256:"));
    let env = config.env.expect("env");
    assert!(
        env.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())
    );

    // Present now: ensure_image must not rebuild, and the id stays the same.
    let state = tempfile::tempdir().unwrap();
    image::ensure_image(&docker, &reference, state.path(), &mut |line| {
        panic!("rebuilt: {line}")
    })
    .await
    .expect("ensure present image");

    let (code, output) = run_in_image(
        &docker,
        &reference,
        "id -u; ls / ; cat /etc/os-release | head -1",
    )
    .await;
    assert_eq!(code, 0, "{output}");
    let mut lines = output.lines();
    assert_eq!(lines.next(), Some("65532"));
    let listing: Vec<&str> = output.lines().collect();
    for dir in ["bin", "etc", "home", "tmp", "usr", "workspace"] {
        assert!(listing.contains(&dir), "ls / lacks {dir}: {output}");
    }
    let host_first = std::fs::read_to_string("/etc/os-release").unwrap();
    assert_eq!(listing.last().copied(), host_first.lines().next());

    let script = "set -e; whoami; pwd; sh -c 'echo sh-ok'; echo 1 2 | awk '{print $2}'; \
                  touch /workspace/f && ls -n /workspace/f | cut -d' ' -f3; \
                  find / -xdev -perm /6000 -type f 2>/dev/null | wc -l; ps -o comm= -p 1; echo end";
    let (code, output) = run_in_image(&docker, &reference, script).await;
    assert_eq!(code, 0, "{output}");
    assert_eq!(
        output,
        "sandbox\n/workspace\nsh-ok\n2\n65532\n0\nbash\nend\n"
    );
}

#[tokio::test]
async fn missing_foreign_image_is_an_error_not_a_pull() {
    let Some(docker) = docker_or_skip("missing_foreign_image_is_an_error_not_a_pull").await else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let err = image::ensure_image(&docker, "stockade/absent:0", state.path(), &mut |_| {})
        .await
        .expect_err("absent image");
    assert!(matches!(err, ImageError::NotPresent { .. }), "{err}");
    assert!(err.to_string().contains("stockade never pulls"), "{err}");
    assert!(
        !state.path().join("image-build.lock").exists(),
        "no build was attempted"
    );
}
