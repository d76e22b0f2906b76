"""The team stack's files, checked without Docker or a cluster: infra/compose/compose.yaml
(structure, wiring, credentials, ports; the Compose Specification's JSON schema when
check-jsonschema, which ships it, is installed), infra/k8s/gpu-job-template.json (what Prefect's
server and its Kubernetes worker accept, rendered like a worker renders it) and
infra/deepspeed/hostfile.example (parsed by DeepSpeed's own launcher)."""

import importlib.util
import json
import re
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "infra" / "compose"
COMPOSE_TEXT = (COMPOSE_DIR / "compose.yaml").read_text()
TEMPLATE = json.loads((ROOT / "infra" / "k8s" / "gpu-job-template.json").read_text())
HOSTFILE = ROOT / "infra" / "deepspeed" / "hostfile.example"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}, $VAR; $$ is a literal $.
VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def env_example() -> dict[str, str]:
    values = {}
    for line in (COMPOSE_DIR / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


def used_variables(text: str) -> set[str]:
    text = text.replace("$$", "")  # escaped: expanded by the container's shell, not by compose
    return {m["braced"] or m["bare"] for m in VAR.finditer(text)}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation, enough for this file: unset or empty, :- uses the default, :? fails."""

    def one(m: re.Match) -> str:
        name = m["braced"] or m["bare"]
        value, op = env.get(name), m["op"] or ""
        if op in (":-", "-") and not (value if op == ":-" else value is not None):
            return m["arg"]
        if op in (":?", "?") and not (value if op == ":?" else value is not None):
            raise KeyError(f"{name}: {m['arg']}")
        return value or ""

    parts = text.split("$$")
    return "$".join(VAR.sub(one, part) for part in parts)


@pytest.fixture(scope="module")
def stack() -> dict:
    return yaml.safe_load(interpolate(COMPOSE_TEXT, env_example()))


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_every_variable_the_compose_file_uses_is_in_env_example():
    missing = used_variables(COMPOSE_TEXT) - set(env_example())
    assert not missing, f"add to infra/compose/.env.example: {sorted(missing)}"


def test_passwords_are_required_and_not_real():
    # A password missing from .env stops compose with a message, rather than starting with "".
    for name in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert re.search(r"\$\{" + name + r":\?", COMPOSE_TEXT), name
        assert "change-me" in env_example()[name], f"{name} in .env.example must be a placeholder"
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD"):
        interpolate(COMPOSE_TEXT, {k: v for k, v in env_example().items() if k != "POSTGRES_PASSWORD"})
    ignored = (COMPOSE_DIR / ".gitignore").read_text().split()
    assert ".env" in ignored


def test_services_have_an_image_and_their_dependencies_exist_with_the_checks_they_wait_for(stack):
    services = stack["services"]
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name}: neither image nor build"
        build = svc.get("build")
        if build:
            context = COMPOSE_DIR / (build if isinstance(build, str) else build.get("context", "."))
            assert (context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")).is_file(), name
        deps = svc.get("depends_on") or {}
        deps = {d: {"condition": "service_started"} for d in deps} if isinstance(deps, list) else deps
        for dep, how in deps.items():
            assert dep in services, f"{name} depends on {dep}, which is no service"
            condition = how.get("condition", "service_started")
            if condition == "service_healthy":
                assert services[dep].get("healthcheck", {}).get("test"), f"{name} waits for {dep} to be healthy: it has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} is a one-shot job: it must not restart"
    # Every long-running service says when it is ready (the one-shot job says so by exiting).
    for name, svc in services.items():
        if svc.get("restart", "no") != "no":
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_published_ports_are_bound_to_loopback(stack):
    published = []
    for name, svc in stack["services"].items():
        for port in svc.get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).rsplit(":", 2)[0] if str(port).count(":") == 2 else None
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} is not bound to 127.0.0.1"
            published.append(port)
    assert published, "the UIs must be reachable from the host"


def test_prefect_and_mlflow_use_the_postgres_service_credentials(stack):
    services = stack["services"]
    pg = environment(services["postgres"])
    databases = {pg["POSTGRES_DB"], pg["MLFLOW_DB"]}
    init = (COMPOSE_DIR / "postgres" / "create-mlflow-db.sh").read_text()
    assert re.search(r'CREATE DATABASE \\"\$MLFLOW_DB\\"', init) and any(
        "create-mlflow-db.sh:/docker-entrypoint-initdb.d/" in v for v in services["postgres"]["volumes"]
    )
    urls = {
        "prefect-server": environment(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"],
        "mlflow": environment(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"],
    }
    assert urlsplit(urls["prefect-server"]).scheme == "postgresql+asyncpg"
    assert urlsplit(urls["mlflow"]).scheme == "postgresql"
    for name, url in urls.items():
        u = urlsplit(url)
        assert (u.username, u.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"]), name
        assert (u.hostname, u.port or 5432) == ("postgres", 5432), name
        assert u.path.lstrip("/") in databases, name
    assert urlsplit(urls["prefect-server"]).path != urlsplit(urls["mlflow"]).path, "Prefect and MLflow share a database"


def test_the_worker_reaches_the_servers_by_service_name(stack):
    services = stack["services"]
    worker = environment(services["prefect-worker"])
    api = urlsplit(worker["PREFECT_API_URL"])
    assert (api.hostname, api.port, api.path) == ("prefect-server", 4200, "/api")
    assert "--port" in services["prefect-server"]["command"] and "4200" in services["prefect-server"]["command"]
    assert "lifecycle-pool" in services["prefect-worker"]["command"]
    tracking = urlsplit(worker["MLFLOW_TRACKING_URI"])
    assert tracking.hostname == "mlflow" and tracking.port == 5000
    # MLflow 3.17 answers 403 to a Host header it does not allow: the worker's must be allowed.
    allowed = environment(services["mlflow"])["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert any(fnmatch(tracking.netloc, pattern) for pattern in allowed), (tracking.netloc, allowed)
    assert any(fnmatch(f"127.0.0.1:{env_example()['MLFLOW_PORT']}", p) for p in allowed), "the browser's Host header"
    # the pull step of infra/prefect.yaml changes into LIFECYCLE_REPO: the checkout in the image
    assert worker["LIFECYCLE_REPO"] == "/opt/llm-lifecycle"
    assert "LIFECYCLE_REPO=/opt/llm-lifecycle" in (COMPOSE_DIR / "Dockerfile").read_text()


def test_the_browser_finds_the_apis_on_the_published_ports(stack):
    services = stack["services"]
    port = env_example()["PREFECT_PORT"]
    assert f"127.0.0.1:{port}:4200" in services["prefect-server"]["ports"]
    assert environment(services["prefect-server"])["PREFECT_UI_API_URL"] == f"http://127.0.0.1:{port}/api"
    assert environment(services["prefect-worker"])["PREFECT_UI_URL"] == f"http://127.0.0.1:{port}"


def test_mlflow_artifacts_go_to_the_bucket_the_init_job_creates(stack):
    services = stack["services"]
    mlflow, init = environment(services["mlflow"]), services["minio-init"]
    bucket = urlsplit(mlflow["MLFLOW_ARTIFACTS_DESTINATION"])
    assert bucket.scheme == "s3" and bucket.hostname == environment(init)["MLFLOW_BUCKET"]
    assert "mc mb" in " ".join(init["command"]) and "MLFLOW_BUCKET" in " ".join(init["command"])
    assert "--serve-artifacts" in services["mlflow"]["command"]
    endpoint = urlsplit(mlflow["MLFLOW_S3_ENDPOINT_URL"])
    assert endpoint.hostname == "minio" and endpoint.port == 9000
    minio = environment(services["minio"])
    assert (mlflow["AWS_ACCESS_KEY_ID"], mlflow["AWS_SECRET_ACCESS_KEY"]) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    assert services["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_spark_executors_run_the_drivers_image_and_see_its_paths(stack):
    services = stack["services"]
    worker, spark = services["prefect-worker"], services["spark-worker"]
    assert worker["image"] == spark["image"] == services["spark-master"]["image"], "one Spark and one Python for driver and executors"
    assert "spark://spark-master:7077" in spark["command"]
    assert set(worker["volumes"]) == set(spark["volumes"]), "executors read and write by the driver's paths"
    assert worker["hostname"] == "prefect-worker", "executors connect back to the driver by its hostname"


def test_compose_file_matches_the_compose_specification(stack):
    """The JSON schema of the Compose Specification, as check-jsonschema ships it (a test extra)."""
    spec = importlib.util.find_spec("check_jsonschema")
    if spec is None:
        pytest.skip("check-jsonschema is not installed: it ships the Compose Specification's JSON schema")
    import jsonschema

    schema_path = Path(spec.submodule_search_locations[0]) / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)  # the draft the schema names (2020-12)
    errors = sorted(validator.iter_errors(stack), key=lambda e: list(map(str, e.absolute_path)))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


# --- Kubernetes: a base job template for a Prefect kubernetes work pool on GPU nodes ---


def test_the_server_accepts_the_template_for_a_work_pool():
    from prefect.server.schemas.actions import WorkPoolCreate

    pool = WorkPoolCreate(name="lifecycle-gpu", type="kubernetes", base_job_template=TEMPLATE)
    assert set(pool.base_job_template) == {"job_configuration", "variables"}


def test_template_defaults_fit_its_variables_schema():
    import jsonschema

    variables = TEMPLATE["variables"]
    jsonschema.Draft202012Validator.check_schema(variables)
    defaults = {k: v["default"] for k, v in variables["properties"].items() if "default" in v}
    jsonschema.Draft202012Validator(variables).validate(defaults)
    assert defaults["gpu_count"] >= 1


def render(values: dict | None = None) -> dict:
    """The job manifest a worker would submit, from the template's defaults and ``values``."""
    from prefect.utilities.templating import apply_values

    props = TEMPLATE["variables"]["properties"]
    merged = {k: v["default"] for k, v in props.items() if "default" in v} | (values or {})
    return apply_values(TEMPLATE["job_configuration"], merged)["job_manifest"]


def test_the_job_asks_for_gpus_on_gpu_nodes_with_the_pipelines_settings():
    manifest = render({"gpu_count": 8, "image": "registry.example.com/llm-lifecycle:gpu"})
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    pod = manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert pod["nodeSelector"] and all(isinstance(v, str) for v in pod["nodeSelector"].values())
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])
    env = {e["name"]: e["value"] for e in container["env"]}
    assert urlsplit(env["MLFLOW_TRACKING_URI"]).scheme == "http"
    assert env["LIFECYCLE_REPO"] == "/opt/llm-lifecycle" and env["HF_HUB_OFFLINE"] == "1"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = next(n for n, v in volumes.items() if "persistentVolumeClaim" in v)
    assert mounts[claim] == env["LIFECYCLE_HOME"], "LIFECYCLE_HOME is the claim's mount"
    assert volumes[claim]["persistentVolumeClaim"]["claimName"]
    assert mounts["dshm"] == "/dev/shm" and volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert not re.search(r"\{\{.*?\}\}", json.dumps(manifest)), "a placeholder without a variable"


def test_the_kubernetes_worker_prepares_a_job_from_it(monkeypatch):
    """prefect-kubernetes' own job configuration: its manifest checks, and the pod's environment
    as a worker with PREFECT_API_URL set builds it (the API URL is the worker's own)."""
    pytest.importorskip("prefect_kubernetes", reason="prefect-kubernetes is not installed")
    import asyncio
    from uuid import uuid4

    import prefect.workers.base
    from prefect.client.schemas.objects import FlowRun
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.utilities.templating import PlaceholderType, find_placeholders
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    # Prefect variables and blocks need an API to resolve; the template uses neither.
    assert {p.type for p in find_placeholders(json.dumps(TEMPLATE))} == {PlaceholderType.STANDARD}

    async def no_api(template, *args, **kwargs):
        return template

    monkeypatch.setattr(prefect.workers.base, "resolve_block_document_references", no_api)
    monkeypatch.setattr(prefect.workers.base, "resolve_variables", no_api)
    values = {"image": "registry.example.com/llm-lifecycle:gpu", "gpu_count": 4, "env": {"EXTRA": "1"}}
    # A client is only handed to the resolvers left out above: any object keeps Prefect from starting a server.
    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(TEMPLATE, values, client=object()))
    with temporary_settings({PREFECT_API_URL: "http://prefect-server.prefect.svc.cluster.local:4200/api"}):
        config.prepare_for_flow_run(FlowRun(id=uuid4(), flow_id=uuid4(), name="nightly-run"))
    [container] = config.job_manifest["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PREFECT_API_URL"] == "http://prefect-server.prefect.svc.cluster.local:4200/api"
    assert {"MLFLOW_TRACKING_URI", "LIFECYCLE_HOME", "LIFECYCLE_REPO", "PREFECT__FLOW_RUN_ID", "EXTRA"} <= set(env)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert container["args"], "the worker fills in the flow-run command"


def test_the_job_is_a_valid_kubernetes_job():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")

    def drop_none(x):
        if isinstance(x, dict):
            return {k: drop_none(v) for k, v in x.items() if v is not None}
        return [drop_none(v) for v in x] if isinstance(x, list) else x

    manifest = drop_none(render({"name": "lifecycle-run", "command": "prefect flow-run execute"}))
    manifest["metadata"].pop("generateName")
    manifest["metadata"]["name"] = "lifecycle-run"
    manifest["spec"]["template"]["spec"]["containers"][0]["args"] = ["prefect", "flow-run", "execute"]
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=False)


# --- DeepSpeed: the hostfile example and the settings it names ---


def test_hostfile_example_parses_as_deepspeed_reads_it():
    from deepspeed.launcher.runner import fetch_hostfile

    pool = fetch_hostfile(str(HOSTFILE))
    assert pool and all(slots >= 1 for slots in pool.values()), pool


def test_hostfile_example_names_only_real_pretrain_settings():
    from phases.sections import PretrainConfig

    named = set(re.findall(r"pretrain\.([a-z_]+)", HOSTFILE.read_text()))
    assert {"hostfile", "num_nodes", "num_gpus"} <= named
    assert named <= set(PretrainConfig.model_fields), named - set(PretrainConfig.model_fields)


def test_the_settings_reach_the_launcher_as_the_hostfile_says():
    from deepspeed.launcher.runner import fetch_hostfile

    from phases.pretrain.build import launcher_command
    from phases.sections import PretrainConfig

    nodes = len(fetch_hostfile(str(HOSTFILE)))
    cfg = PretrainConfig(num_nodes=nodes, num_gpus=8, hostfile=str(HOSTFILE))
    cmd = launcher_command(cfg, [], 29500)
    flag = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert (flag["--num_nodes"], flag["--num_gpus"], flag["--hostfile"]) == (str(nodes), "8", str(HOSTFILE))
    with pytest.raises(ValueError, match="hostfile"):
        PretrainConfig(num_nodes=2)
