"""deploy/ checked offline: every Kubernetes manifest against the Kubernetes schemas (strict:
no unknown fields), the InferencePool against a schema written from its CRD's documented
fields, the manifests against each other and the catalog, and the Containerfile's
instructions. No image is built here: base images come from a registry this machine cannot
reach."""

from __future__ import annotations

import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from llamaedge.catalog import find_entry
from llamaedge.limits import DRAIN_S
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# The oldest Kubernetes still supported upstream when written, and the newest bundled schemas.
KUBERNETES_VERSIONS = ["1.31.0", kubernetes_validate.utils.latest_version()]

_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_NAME = {"type": "string", "minLength": 1, "maxLength": 253, "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
# inference.networking.k8s.io/v1 InferencePool, from the API reference of the Gateway API
# Inference Extension: spec.selector.matchLabels, spec.targetPorts (1-8 unique numbers),
# spec.appProtocol, spec.endpointPickerRef (name; port required for a Service; failureMode).
INFERENCE_POOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "inference.networking.k8s.io/v1"},
        "kind": {"const": "InferencePool"},
        "metadata": {"type": "object", "required": ["name"], "properties": {"name": _NAME}},
        "spec": {
            "type": "object",
            "required": ["selector", "targetPorts", "endpointPickerRef"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object", "required": ["matchLabels"], "additionalProperties": False,
                    "properties": {"matchLabels": {"type": "object", "minProperties": 1,
                                                   "additionalProperties": {"type": "string"}}},
                },
                "targetPorts": {
                    "type": "array", "minItems": 1, "maxItems": 8, "uniqueItems": True,
                    "items": {"type": "object", "required": ["number"], "additionalProperties": False,
                              "properties": {"number": _PORT}},
                },
                "appProtocol": {"enum": ["http", "kubernetes.io/h2c"]},
                "endpointPickerRef": {
                    "type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {
                        "group": {"type": "string"},
                        "kind": {"type": "string", "minLength": 1},
                        "name": _NAME,
                        "port": {"type": "object", "required": ["number"], "additionalProperties": False,
                                 "properties": {"number": _PORT}},
                        "failureMode": {"enum": ["FailOpen", "FailClose"]},
                    },
                    # A Service (the default kind) needs its port.
                    "if": {"not": {"required": ["kind"]}},
                    "then": {"required": ["port"]},
                    "else": {"if": {"properties": {"kind": {"const": "Service"}}}, "then": {"required": ["port"]}},
                },
            },
        },
    },
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_manifests() -> list[Path]:
    return sorted(KUBERNETES.rglob("*.yaml"))


def by_kind(kind: str) -> dict[str, Any]:
    found = [doc for path in all_manifests() for doc in documents(path) if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def quantity_bytes(text: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", text)
    assert match, f"not a memory quantity: {text}"
    return int(float(match.group(1)) * units.get(match.group(2) or "", 1))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", [p for p in all_manifests() if "gateway" not in p.parts], ids=lambda p: p.name)
def test_every_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_inference_pool_matches_its_crds_fields() -> None:
    pool = by_kind("InferencePool")
    jsonschema.validate(pool, INFERENCE_POOL_SCHEMA)
    # The schema itself rejects what the CRD rejects.
    broken = json.loads(json.dumps(pool))
    del broken["spec"]["endpointPickerRef"]["port"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, INFERENCE_POOL_SCHEMA)
    broken = json.loads(json.dumps(pool))
    broken["spec"]["targetPorts"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, INFERENCE_POOL_SCHEMA)


def serve_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_manifests_fit_together() -> None:
    deployment, service, pvc, pool = (by_kind(k) for k in ("Deployment", "Service", "PersistentVolumeClaim",
                                                          "InferencePool"))
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    container = serve_container(deployment)
    (port,) = container["ports"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pool["spec"]["targetPorts"] == [{"number": port["containerPort"]}]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [pvc["metadata"]["name"]]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"]) and annotations["prometheus.io/path"] == "/metrics"


def test_probes_watch_health_and_the_drain_fits_the_grace_period() -> None:
    deployment = by_kind("Deployment")
    container = serve_container(deployment)
    port_name = container["ports"][0]["name"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": port_name}, probe
    drain_s = float(option(container["args"], "--drain-s")) if "--drain-s" in container["args"] else DRAIN_S
    assert drain_s < deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > drain_s  # draining is not dying


def test_the_init_container_pulls_the_served_model_and_memory_follows_its_size() -> None:
    deployment = by_kind("Deployment")
    spec = deployment["spec"]["template"]["spec"]
    container = serve_container(deployment)
    (init,) = spec["initContainers"]
    assert init["command"][:2] == ["llamaedge", "pull"]
    model = init["command"][2]
    assert option(container["args"], "--model") == model
    assert init["image"] == container["image"]
    assert {m["name"] for m in init["volumeMounts"]} >= {"models"}
    entry = find_entry(model)
    assert entry is not None
    resources = container["resources"]
    assert quantity_bytes(resources["requests"]["memory"]) >= entry.memory_bytes
    assert quantity_bytes(resources["limits"]["memory"]) >= quantity_bytes(resources["requests"]["memory"])


def test_the_pods_run_as_non_root_with_the_key_from_a_secret() -> None:
    deployment = by_kind("Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    for container in spec["containers"] + spec["initContainers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert not container["image"].endswith(":latest") and ":" in container["image"]
    env = {e["name"]: e for e in serve_container(deployment)["env"]}
    assert "secretKeyRef" in env["LLAMAEDGE_API_KEY"]["valueFrom"]


# -- the Containerfile -----------------------------------------------------------------------

def containerfile() -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((DEPLOY / "Containerfile").read_bytes()))


def instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [i["value"] for i in parser.structure if i["instruction"] == name]


def final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    structure = parser.structure
    last_from = max(i for i, item in enumerate(structure) if item["instruction"] == "FROM")
    return structure[last_from:]


def image_refs(parser: DockerfileParser) -> list[str]:
    """Every base image, with the ARG defaults and the variants deploy/README.md builds."""
    defaults = dict(arg.split("=", 1) for arg in instructions(parser, "ARG") if "=" in arg)
    readme = (DEPLOY / "README.md").read_text() + "\n".join(instructions(parser, "COMMENT"))
    variants = re.findall(r"--build-arg (\w+_IMAGE)=(\S+)", readme)
    assert variants, "the CUDA variant's build args are documented"
    refs = list(defaults[k] for k in defaults if k.endswith("_IMAGE")) + [value for _, value in variants]
    for line in instructions(parser, "FROM"):
        image = line.split()[0]
        if not image.startswith("${"):
            refs.append(image)
    return refs


def test_base_images_are_pinned() -> None:
    for ref in image_refs(containerfile()):
        name, _, tag = ref.rpartition(":")
        assert name and tag and "/" not in tag, f"{ref} has no tag"
        assert tag != "latest", ref


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [i["value"] for i in final_stage(containerfile()) if i["instruction"] == "USER"]
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_the_image_serves_on_all_interfaces_with_a_healthcheck_and_a_models_volume() -> None:
    parser = containerfile()
    stage = final_stage(parser)
    values = {i["instruction"]: i["value"] for i in stage}
    assert values["EXPOSE"] == "8080"
    entrypoint = json.loads(values["ENTRYPOINT"])
    assert entrypoint[:2] == ["llamaedge", "serve"]
    assert option(entrypoint, "--host") == "0.0.0.0" and option(entrypoint, "--port") == "8080"
    assert "/health" in values["HEALTHCHECK"] and "127.0.0.1:8080" in values["HEALTHCHECK"]
    assert values["VOLUME"] == "/models"
    assert "LLAMAEDGE_MODELS_DIR=/models" in values["ENV"]
    # No key is baked in: it comes from LLAMAEDGE_API_KEY at run time.
    assert "API_KEY" not in values["ENV"] and "--api-key" not in entrypoint + json.loads(values["CMD"])


def test_the_images_default_model_is_a_catalog_chat_model() -> None:
    values = {i["instruction"]: i["value"] for i in final_stage(containerfile())}
    entry = find_entry(option(json.loads(values["CMD"]), "--model"))
    assert entry is not None and entry.kind == "chat"


def test_the_build_copies_only_what_exists() -> None:
    parser = containerfile()
    for copy in instructions(parser, "COPY"):
        parts = shlex.split(copy)
        if parts[0].startswith("--from="):
            continue
        for source in parts[:-1]:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path in the repository"


def test_the_cuda_variant_builds_llama_cpp_with_cuda() -> None:
    parser = containerfile()
    readme = (DEPLOY / "README.md").read_text()
    assert "--build-arg LLAMA_CPP_CMAKE_ARGS=-DGGML_CUDA=on" in readme
    args = instructions(parser, "ARG")
    assert any(a.startswith("LLAMA_CPP_CMAKE_ARGS") for a in args)
    assert any("CMAKE_ARGS=\"${LLAMA_CPP_CMAKE_ARGS}\"" in run for run in instructions(parser, "RUN"))
