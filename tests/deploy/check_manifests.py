"""The Kubernetes manifests in deploy/kubernetes/, checked three ways:

1. against the Kubernetes API schemas (kubernetes-validate, strict: an
   unknown or misspelt field fails);
2. against each other and comb's settings: the ports, probe paths, mounts
   and the grace period agree with the comb.toml the ConfigMap holds;
3. against the real binary: comb started with that comb.toml (only its
   listeners moved to free loopback ports, its plugins folder to an empty
   one) answers the Deployment's probes on the health listener, ready once
   the first pull of its references is over.

Run by `cargo xtask test` with the comb it built:
    python3 tests/deploy/check_manifests.py target/debug/comb
"""

import pathlib
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33"


def load():
    """Every resource in the folder, by kind and name."""
    resources = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None or doc.get("kind") == "Kustomization":
                continue
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                sys.exit(f"{path.name}: {doc['kind']}/{doc['metadata']['name']}: {error.message}")
            resources[(doc["kind"], doc["metadata"]["name"])] = doc
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    files = sorted(p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == files, f"kustomization.yaml lists {listed}, the folder has {files}"
    return resources


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def check_consistency(resources):
    """The Deployment, Service, HPA and PDB agree with comb.toml."""
    settings = tomllib.loads(resources[("ConfigMap", "comb")]["data"]["comb.toml"])
    deployment = resources[("Deployment", "comb")]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == port_of(settings["listen"]), (ports, settings["listen"])
    assert ports["health"] == port_of(settings["health-listen"]), (ports, settings["health-listen"])
    assert settings["admin-listen"].startswith("127.0.0.1:"), "comb's page stays in the pod"
    probes = {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("readinessProbe", "livenessProbe", "startupProbe")
    }
    assert probes == {
        "readinessProbe": ("/readyz", "health"),
        "livenessProbe": ("/livez", "health"),
        "startupProbe": ("/livez", "health"),
    }, probes
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["config"]["mountPath"] == env["COMB_CONFIG"]
    assert mounts["config"]["subPath"] == "comb.toml"
    assert mounts["cache"]["mountPath"] == env["COMB_CACHE_DIR"]
    assert mounts["registry-credentials"]["mountPath"] == env["DOCKER_CONFIG"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "emptyDir" in volumes["cache"], "the cache is the only writable path"
    assert volumes["config"]["configMap"]["name"] == "comb"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # The kubelet's SIGKILL must come after the delay, the drain and a
    # few seconds for the span flush.
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    needed = (settings["shutdown-delay-ms"] + settings["shutdown-timeout-ms"]) / 1000 + 5
    assert grace >= needed, f"terminationGracePeriodSeconds {grace} < {needed}"
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = resources[("Service", "comb")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert resources[("PodDisruptionBudget", "comb")]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert resources[("HorizontalPodAutoscaler", "comb")]["spec"]["scaleTargetRef"]["name"] == "comb"
    assert "resources" in container and container["resources"]["requests"]["cpu"], "HPA on CPU needs a request"
    endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    collector = resources[("Service", "otel-collector")]
    assert endpoint == f"http://otel-collector:{collector['spec']['ports'][1]['port']}", endpoint
    return settings


def check_with_comb(comb, settings_text):
    """comb itself reads the ConfigMap's comb.toml and answers the probes."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        (scratch / "plugins").mkdir()
        config = scratch / "comb.toml"
        config.write_text(settings_text)
        process = subprocess.Popen(
            [comb, "serve", "--config", str(config), "--plugins", str(scratch / "plugins"),
             "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
             "--health-listen", "127.0.0.1:0", "--cache-dir", str(scratch / "cache")],
            stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin"},
        )
        log = []
        try:
            health = None
            deadline = time.monotonic() + 60
            while health is None:
                line = process.stderr.readline()
                assert line and time.monotonic() < deadline, "comb exited or did not listen:\n" + "".join(log)
                log.append(line)
                found = re.search(r"health listening on (http://\S+)", line)
                health = found and found.group(1)
            assert get(health + "/livez") == 200
            # Ready once every reference was tried (here they cannot be
            # reached: the first pull fails, and comb is ready all the same).
            while get(health + "/readyz") != 200:
                assert time.monotonic() < deadline, "never ready:\n" + "".join(log)
                time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(timeout=30)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def main():
    comb = sys.argv[1]
    resources = load()
    check_consistency(resources)
    check_with_comb(comb, resources[("ConfigMap", "comb")]["data"]["comb.toml"])
    print(f"deploy/kubernetes: {len(resources)} resources valid against Kubernetes "
          f"{KUBERNETES_VERSION}, consistent with comb.toml, probes answered by comb")


if __name__ == "__main__":
    main()
