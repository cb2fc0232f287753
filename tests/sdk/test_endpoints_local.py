"""Local endpoints with real processes: deploy waits for /ping, a server that dies at start leaves
nothing behind, a dead server shows Failed, undeploy stops it and keeps the job, invoke passes the
adapter.

The server is a stand-in ``ftcloud_train`` package put first on PYTHONPATH, so the endpoint
backend starts it exactly as it starts the real one (``python -m ftcloud_train serve``) with the
same contract: SAGEMAKER_BIND_TO_PORT, FTCLOUD_SERVE_HOST, FTCLOUD_ML_ROOT/model, /ping 503 while
loading then 200, POST /invocations, SIGTERM stops it. The same package's ``train`` writes a
model directory, so the deployed job is a real Completed local job run by the real runner.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from ftcloud.backends.local import LocalBackend
from ftcloud.cli import main
from ftcloud.endpoints.base import DeployError, EndpointNotFoundError, build_payload, generated_text
from ftcloud.endpoints.local import LocalEndpoints, ping, process_alive, read_record
from ftcloud.errors import UsageError
from ftcloud.job import build_job_spec

STAND_IN = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from pathlib import Path

    root = Path(os.environ["FTCLOUD_ML_ROOT"])
    if sys.argv[1] == "train":
        time.sleep(float(os.environ.get("STANDIN_TRAIN_S", "0")))
        if os.environ.get("STANDIN_ARTIFACT"):  # a real model as the job's artifact
            import shutil
            shutil.rmtree(root / "model", ignore_errors=True)
            shutil.copytree(os.environ["STANDIN_ARTIFACT"], root / "model")
            (root / "model" / "metrics.json").write_text(json.dumps({"eval_loss": 1.25}))
            sys.exit(0)
        (root / "model").mkdir(parents=True, exist_ok=True)
        (root / "model" / "adapter_config.json").write_text(json.dumps({"marker": os.environ.get("MARKER", "m1")}))
        (root / "model" / "metrics.json").write_text(json.dumps({"eval_loss": 1.25}))
        sys.exit(0)
    assert sys.argv[1] == "serve", sys.argv
    print("loading", root / "model", flush=True)
    if os.environ.get("STANDIN_DIE"):
        print("RuntimeError: stand-in cannot load the model", flush=True)
        sys.exit(3)
    marker = json.loads((root / "model" / "adapter_config.json").read_text())["marker"]
    print("FTCLOUD_BASE_MODEL=" + os.environ.get("FTCLOUD_BASE_MODEL", ""), flush=True)
    ready_at = time.monotonic() + float(os.environ.get("STANDIN_LOAD_S", "1.0"))

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/ping":
                self._send(200 if time.monotonic() >= ready_at else 503, {})
            else:
                self._send(404, {"error": "no such route"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            attrs = self.headers.get("X-Amzn-SageMaker-Custom-Attributes", "")
            adapter = dict(p.split("=", 1) for p in attrs.split(",") if "=" in p).get("adapter", "default")
            if "messages" in body:
                text = f"{marker}|{adapter}|chat:{body['messages'][-1]['content']}"
                self._send(200, {"object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
                return
            if "inputs" not in body:
                self._send(422, {"error": "field 'inputs' is required"})
                return
            if body.get("stream"):  # server-sent events, one token per event, flushed one by one
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for token in (marker, "|", adapter, "|", body["inputs"]):
                    self.wfile.write(b"data: " + json.dumps({"token": {"text": token}}).encode() + b"\\n\\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\\n\\n")
                self.close_connection = True
                return
            self._send(200, [{"generated_text": f"{marker}|{adapter}|{body['inputs']}|{body.get('parameters', {})}"}])

    server = ThreadingHTTPServer((os.environ["FTCLOUD_SERVE_HOST"], int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler)

    def stop(signum, frame):
        print("SIGTERM: stopping cleanly", flush=True)
        if os.environ.get("STANDIN_STOP_FILE"):
            Path(os.environ["STANDIN_STOP_FILE"]).write_text("stopped on SIGTERM")
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
    sys.exit(0)
    """
)


@pytest.fixture()
def stand_in(tmp_path, monkeypatch):
    pkg = tmp_path / "stand-in" / "ftcloud_train"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(STAND_IN)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(pkg.parent), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("STANDIN_LOAD_S", "1.0")


@pytest.fixture()
def jobs(ftcloud_home):
    return LocalBackend(root=ftcloud_home / "jobs")


@pytest.fixture()
def endpoints(ftcloud_home, jobs):
    return LocalEndpoints(root=ftcloud_home / "endpoints", jobs=jobs)


@pytest.fixture()
def completed_job(stand_in, jobs, train_file, tmp_path):
    """A real local job, run by the real runner, whose (stand-in) trainer saved a model."""
    base = tmp_path / "base-model"
    base.mkdir()
    spec = build_job_spec(overrides={"name": "job-a", "model": str(base), "train_data": str(train_file)})
    jobs.launch(spec)
    final = jobs.wait("job-a", timeout=60, poll=0.2)
    assert final.status == "Completed", final.failure_reason
    return final


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_deploy_waits_for_ping_then_invoke_reaches_the_jobs_model_with_the_adapter(endpoints, completed_job):
    notes: list[str] = []
    status = endpoints.deploy("job-a", "ep-a", progress=notes.append)
    try:
        assert status.status == "InService" and status.ready
        assert ping(status.url) == 200
        log = Path(status.log).read_text()
        # Deploy really polled through the loading phase: /ping answered 503 before 200.
        assert '"GET /ping HTTP/1.1" 503' in log and '"GET /ping HTTP/1.1" 200' in log
        assert any("InService" in n for n in notes)
        record = read_record(endpoints.endpoint_dir("ep-a"))
        assert record["pid"] == status.pid and process_alive(record["pid"], record["pid_start_time"])
        assert record["url"] == f"http://127.0.0.1:{record['port']}"
        # FTCLOUD_ML_ROOT/model is the job's model directory.
        assert (endpoints.endpoint_dir("ep-a") / "ml" / "model").resolve() == Path(completed_job.artifacts).resolve()

        answer = endpoints.invoke("ep-a", build_payload("hi", parameters={"max_new_tokens": 4}), adapter="fr")
        assert generated_text(answer) == "m1|fr|hi|{'max_new_tokens': 4}"
        assert generated_text(endpoints.invoke("ep-a", build_payload("yo"))) == "m1|default|yo|{}"
        from ftcloud.endpoints.local import EndpointInvokeError

        with pytest.raises(EndpointInvokeError) as bad:
            endpoints.invoke("ep-a", {"messages_typo": []})
        assert bad.value.status == 422 and "inputs" in bad.value.message
    finally:
        endpoints.undeploy("ep-a")


def test_a_server_that_dies_at_start_reports_its_log_and_leaves_no_record(endpoints, completed_job):
    with pytest.raises(DeployError) as err:
        endpoints.deploy("job-a", "ep-dies", env={"STANDIN_DIE": "1"}, timeout=30)
    assert "exited with status 3" in err.value.message
    assert "stand-in cannot load the model" in err.value.message  # the log's tail
    assert not endpoints.endpoint_dir("ep-dies").exists()
    assert endpoints.list() == []
    with pytest.raises(EndpointNotFoundError):
        endpoints.describe("ep-dies")


def test_endpoints_shows_failed_for_a_dead_server(endpoints, completed_job):
    status = endpoints.deploy("job-a", "ep-dead")
    os.kill(status.pid, signal.SIGKILL)
    wait_until(lambda: not process_alive(status.pid))
    [row] = endpoints.list()
    assert row.name == "ep-dead" and row.status == "Failed"
    assert str(status.pid) in row.failure_reason
    with pytest.raises(DeployError, match="not running"):
        endpoints.invoke("ep-dead", build_payload("hi"))
    # A dead endpoint's name can be deployed again; the new server replaces the record.
    again = endpoints.deploy("job-a", "ep-dead")
    assert again.status == "InService" and again.pid != status.pid
    endpoints.undeploy("ep-dead")


def test_undeploy_stops_the_server_with_sigterm_and_keeps_the_job(endpoints, jobs, completed_job, tmp_path):
    stop_file = tmp_path / "stopped"
    status = endpoints.deploy("job-a", "ep-stop", env={"STANDIN_STOP_FILE": str(stop_file)})
    log_copy = Path(status.log).parent.parent / "ep-stop.log"  # the endpoint directory goes away
    started = time.monotonic()
    result = endpoints.undeploy("ep-stop")
    assert result.status == "Deleted"
    assert not process_alive(status.pid)
    assert stop_file.read_text() == "stopped on SIGTERM"  # its handler ran: a clean stop, not a kill
    assert time.monotonic() - started < 10  # it honoured SIGTERM; no 30 s SIGKILL fallback
    assert ping(status.url, timeout=0.5) is None
    assert not endpoints.endpoint_dir("ep-stop").exists() and not log_copy.exists()
    # The job and its model are untouched.
    assert jobs.status("job-a").status == "Completed"
    assert json.loads((Path(completed_job.artifacts) / "adapter_config.json").read_text())["marker"] == "m1"
    with pytest.raises(EndpointNotFoundError):
        endpoints.undeploy("ep-stop")


def test_a_live_endpoint_name_is_not_taken_twice_and_sagemaker_options_are_refused(endpoints, completed_job):
    with pytest.raises(UsageError, match="instance_type"):
        endpoints.deploy("job-a", "ep-x", instance_type="ml.g5.xlarge")
    for tri_state in ("network_isolation", "vpc"):  # an explicit --no-... asks for something too
        with pytest.raises(UsageError, match=tri_state):
            endpoints.deploy("job-a", "ep-x", **{tri_state: False})
    assert not endpoints.endpoint_dir("ep-x").exists()
    endpoints.deploy("job-a", "ep-x")
    try:
        with pytest.raises(UsageError, match="already exists"):
            endpoints.deploy("job-a", "ep-x")
    finally:
        endpoints.undeploy("ep-x")


def test_unknown_targets_and_unfinished_jobs_are_refused(endpoints, jobs, stand_in, train_file, tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="'no-such-job' is not a local training job, and as a model group"):
        endpoints.deploy("no-such-job", "ep-y")
    monkeypatch.setenv("STANDIN_TRAIN_S", "30")
    base = tmp_path / "base-model"
    base.mkdir()
    jobs.launch(build_job_spec(overrides={"name": "job-b", "model": str(base), "train_data": str(train_file)}))
    try:
        with pytest.raises(UsageError, match="Job 'job-b' is InProgress; only a Completed job"):
            endpoints.deploy("job-b", "ep-y")
        assert not endpoints.endpoint_dir("ep-y").exists()
    finally:
        jobs.stop("job-b")


def test_cli_deploy_invoke_endpoints_undeploy(completed_job, capsys):
    assert main(["deploy", "job-a", "--name", "ep-cli", "--backend", "local", "--json"]) == 0
    deployed = json.loads(capsys.readouterr().out)
    assert deployed["status"] == "InService" and deployed["target"] == "job-a"
    try:
        assert main(["invoke", "ep-cli", "hello", "--adapter", "de", "--param", "max_new_tokens=3"]) == 0
        assert capsys.readouterr().out.strip() == "m1|de|hello|{'max_new_tokens': 3}"
        assert main(["endpoints", "--json"]) == 0
        [row] = json.loads(capsys.readouterr().out)
        assert row["name"] == "ep-cli" and row["status"] == "InService"
    finally:
        assert main(["undeploy", "ep-cli"]) == 0
    assert "Undeployed ep-cli" in capsys.readouterr().out
    assert not process_alive(deployed["pid"])


def test_registry_versions_deploy_only_once_approved(endpoints, completed_job, tmp_path):
    from ftcloud.registry.local import LocalRegistry

    registry = LocalRegistry()
    endpoints._registry = registry
    version = registry.register(completed_job, "chat")
    with pytest.raises(UsageError, match="PendingManualApproval, not Approved"):
        endpoints.deploy("chat:1")
    with pytest.raises(UsageError, match="no Approved versions"):
        endpoints.deploy("chat")
    assert endpoints.list() == []
    registry.approve("chat:1", "looks good")
    status = endpoints.deploy("chat")  # the group's newest Approved version
    try:
        assert status.name == "chat" and status.status == "InService"
        assert read_record(endpoints.endpoint_dir("chat"))["version"] == "chat:1"
        assert generated_text(endpoints.invoke("chat", build_payload("q"))).startswith("m1|default|q")
        # The version's recorded serving environment reached the server.
        expected = version.environment["FTCLOUD_BASE_MODEL"]
        assert expected and f"FTCLOUD_BASE_MODEL={expected}" in Path(status.log).read_text()
    finally:
        endpoints.undeploy("chat")
    assert registry.get("chat:1").status == "Approved"  # undeploy never touches the registry


def test_the_real_serve_entrypoint_behind_a_local_endpoint(stand_in, jobs, train_file, tmp_path, tiny_model_dir,
                                                           monkeypatch):
    """The stand-in only trains (it copies the tiny model as the job's artifact); the endpoint then
    runs the real ``python -m ftcloud_train serve`` on it."""
    pytest.importorskip("ftcloud_train.serving.server")
    pytest.importorskip("fastapi")
    monkeypatch.setenv("STANDIN_ARTIFACT", str(tiny_model_dir))
    jobs.launch(build_job_spec(overrides={"name": "job-real", "model": str(tiny_model_dir),
                                          "train_data": str(train_file)}))
    assert jobs.wait("job-real", timeout=60, poll=0.2).status == "Completed"
    monkeypatch.delenv("PYTHONPATH")  # from here on the real ftcloud_train package serves
    endpoints = LocalEndpoints(jobs=jobs)
    status = endpoints.deploy("job-real", "ep-real", timeout=240)
    try:
        assert status.status == "InService"
        first = generated_text(endpoints.invoke("ep-real", build_payload("hello", parameters={"max_new_tokens": 4})))
        again = generated_text(endpoints.invoke("ep-real", build_payload("hello", parameters={"max_new_tokens": 4})))
        assert isinstance(first, str) and first == again  # greedy decoding is deterministic
        streamed = endpoints.invoke("ep-real", build_payload("hello", parameters={"max_new_tokens": 4}, stream=True),
                                    stream=True)
        assert "".join(streamed) == first  # server-sent events from the real server, read by the SDK
        from ftcloud.endpoints.local import EndpointInvokeError

        with pytest.raises(EndpointInvokeError) as bad:
            endpoints.invoke("ep-real", {"parameters": {}})
        assert 400 <= bad.value.status < 500
        pid = status.pid
    finally:
        endpoints.undeploy("ep-real")
    assert not process_alive(pid)


def test_cli_invoke_chat_messages_and_streaming(completed_job, tmp_path, capsys):
    assert main(["deploy", "job-a", "--name", "ep-chat", "--backend", "local", "--json"]) == 0
    capsys.readouterr()
    try:
        chat = tmp_path / "chat.json"
        chat.write_text(json.dumps({"messages": [{"role": "system", "content": "be brief"},
                                                 {"role": "user", "content": "hi there"}]}))
        assert main(["invoke", "ep-chat", "--messages-file", str(chat), "--adapter", "fr"]) == 0
        assert capsys.readouterr().out.strip() == "m1|fr|chat:hi there"
        assert main(["invoke", "ep-chat", "stream me", "--stream", "--adapter", "de"]) == 0
        assert capsys.readouterr().out.strip() == "m1|de|stream me"
        pieces = list(LocalEndpoints().invoke("ep-chat", build_payload("x", stream=True), stream=True))
        assert pieces == ["m1", "|", "default", "|", "x"]  # one piece per server-sent event
        assert main(["invoke", "ep-chat"]) == 2  # neither a prompt nor messages
        assert "either PROMPT or --messages-file" in capsys.readouterr().err
    finally:
        main(["undeploy", "ep-chat"])


def test_the_sdk_verbs_pick_the_local_backend_for_a_local_job(completed_job):
    import ftcloud

    status = ftcloud.deploy("job-a", "ep-sdk")  # no backend given: the local store has job-a
    try:
        assert status.backend == "local" and status.status == "InService"
        answer = ftcloud.invoke("ep-sdk", "hey", adapter="it", parameters={"max_new_tokens": 2})
        assert ftcloud.endpoints.generated_text(answer) == "m1|it|hey|{'max_new_tokens': 2}"
        assert [e.name for e in ftcloud.list_endpoints()] == ["ep-sdk"]
    finally:
        assert ftcloud.undeploy("ep-sdk").status == "Deleted"
    assert ftcloud.list_endpoints() == []


@pytest.mark.parametrize("command", ["deploy", "endpoints", "undeploy", "invoke"])
def test_endpoint_commands_help_imports_nothing_heavy(command):
    from tests.sdk.test_import_light import HEAVY, SLOW, loaded_modules

    modules, out = loaded_modules([command, "--help"])
    assert "Usage:" in out
    assert not modules & set(HEAVY + SLOW), modules & set(HEAVY + SLOW)
