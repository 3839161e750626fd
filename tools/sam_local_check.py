"""`make sam-local-check`: every function under the real SAM CLI in Docker, against `make local`.

What it does, stopping whatever it started and ending with one summary line (non-zero exit on any
failure):
1. Docker: uses the running engine; only with SAM_LOCAL_SETUP=1, as root, installs docker.io and
   starts dockerd itself (otherwise it says what to install).
2. The Lambda image: public.ecr.aws/lambda/python:3.13 if it is there or can be pulled, else a
   stand-in built from Debian packages (tools/build_lambda_image.sh), reused once built.
3. `sam build` for x86_64 (what runs here) and for arm64 (built only: emulated arm64 times out).
4. The local stack (`python -m local_stack`) on free ports, listening beyond loopback so that the
   containers reach moto and the Moment sandbox at host.docker.internal; nothing on its timers.
5. `sam local invoke` of every function with its file in events/ (the webhook signed afresh into
   build/), each checked against what it should have done to the local stack, plus AWS's own
   `sam local generate-event dynamodb update` sample through the reconciler.
6. `sam local start-api`: a signed webhook (200, stored), a forged one (401), the ledger routes.

Environment: SAM (the sam executable), SAM_LOCAL_IMAGE (an image to use instead), SAM_LOCAL_SETUP=1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "shared"), str(ROOT / "local")]

from local_stack.made_up_values import LOCAL_WEBHOOK_SECRET  # noqa: E402
from local_stack.sample_events import env_file  # noqa: E402
from local_stack.stack import REGION, LocalSettings  # noqa: E402
from moment_sync.signature import decode_signing_key, signature_header  # noqa: E402

WORK = ROOT / "build" / "sam-local"
OFFICIAL_IMAGE = "public.ecr.aws/lambda/python:3.13"
STAND_IN_IMAGE = "local/lambda-python3.13"
SAMPLE_WEBHOOK_ID = "msg_2mXnExampleDelivery01"  # tools/sign_webhook_event.py's
SAMPLE_CUSTOMER = "UCR1001"  # events/ledger_api/put-customer.json's
FORGED_SECRET = "whsec_" + "Zm9yZ2VkLWtleS1ub3QtbW9tZW50cy0xMjM0NTY3OA=="  # made up, not the local one


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        return ok


class Stopper:
    """What this run started, stopped in reverse order whatever happens."""

    def __init__(self) -> None:
        self._processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def add(self, name: str, process: subprocess.Popen[bytes]) -> None:
        self._processes.append((name, process))

    def stop_all(self) -> None:
        for name, process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            print(f"stopped {name}", flush=True)


def run(command: list[str], timeout: float = 600, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 -- docker, sam and our own scripts, with fixed arguments
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(what: str, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"sam-local-check: {what} was not ready within {timeout:.0f} s")


# --- Docker and the image -------------------------------------------------------------------------


def docker_running() -> bool:
    return shutil.which("docker") is not None and run(["docker", "info"], timeout=30).returncode == 0


def setting_up() -> bool:
    return os.environ.get("SAM_LOCAL_SETUP") == "1" and os.geteuid() == 0


def apt_install(*packages: str) -> None:
    print(f"==> apt-get install -y {' '.join(packages)}", flush=True)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = run(command, timeout=900, env=environment)
        if result.returncode != 0:
            raise SystemExit(f"sam-local-check: {' '.join(command)} failed: {result.stderr.strip()[-500:]}")


def ensure_docker(stopper: Stopper) -> None:
    if docker_running():
        return
    if not setting_up():
        raise SystemExit(
            "sam-local-check: no Docker engine is running. Start yours (Docker Desktop, or "
            "`sudo systemctl start docker`), or let this install and start one: as root, "
            "SAM_LOCAL_SETUP=1 make sam-local-check (apt-get install docker.io, then dockerd)"
        )
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
    print("==> starting dockerd", flush=True)
    log = (WORK / "dockerd.log").open("wb")
    dockerd = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT)  # noqa: S607 -- from apt
    stopper.add("dockerd", dockerd)
    wait_for("dockerd", docker_running, 60)


def image_present(image: str) -> bool:
    return run(["docker", "image", "inspect", image], timeout=30).returncode == 0


def ensure_image() -> str | None:
    """The image to pass as --invoke-image, or None when SAM's own (the official one) is there."""
    chosen = os.environ.get("SAM_LOCAL_IMAGE")
    if chosen:
        if not image_present(chosen):
            raise SystemExit(f"sam-local-check: SAM_LOCAL_IMAGE={chosen} is not in Docker")
        return chosen
    if image_present(OFFICIAL_IMAGE):
        return None
    print(f"==> docker pull {OFFICIAL_IMAGE}", flush=True)
    try:
        if run(["docker", "pull", OFFICIAL_IMAGE], timeout=300).returncode == 0:
            return None
    except subprocess.TimeoutExpired:
        pass
    if image_present(STAND_IN_IMAGE):
        print(f"==> no registry: using the stand-in {STAND_IN_IMAGE} built before", flush=True)
        return STAND_IN_IMAGE
    if shutil.which("debootstrap") is None:
        if not setting_up():
            raise SystemExit(
                f"sam-local-check: {OFFICIAL_IMAGE} cannot be pulled and debootstrap is missing to build "
                "a stand-in: apt-get install -y debootstrap (or SAM_LOCAL_SETUP=1 as root)"
            )
        apt_install("debootstrap")
    print(f"==> no registry: building the stand-in {STAND_IN_IMAGE} (1-2 minutes)", flush=True)
    result = run(
        ["bash", str(ROOT / "tools" / "build_lambda_image.sh"), STAND_IN_IMAGE, "x86_64"],
        timeout=1200,
        env={**os.environ, "PYTHON": sys.executable},
    )
    if result.returncode != 0:
        raise SystemExit(f"sam-local-check: building the stand-in failed:\n{result.stderr[-2000:]}")
    return STAND_IN_IMAGE


# --- sam ------------------------------------------------------------------------------------------


def sam_environment() -> dict[str, str]:
    # Made-up credentials, so nothing a function does can reach a real account.
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"}
    }
    environment.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 -- made up
        AWS_DEFAULT_REGION=REGION,
        SAM_CLI_TELEMETRY="0",
    )
    return environment


def sam_build(sam: str, architecture: str) -> subprocess.CompletedProcess[str]:
    build_dir = WORK / architecture
    return run(
        [
            sam,
            "build",
            "--template",
            str(ROOT / "template.yaml"),
            "--build-dir",
            str(build_dir),
            "--parameter-overrides",
            f"Architecture={architecture}",
        ],
        timeout=900,
        cwd=ROOT,
        env={**sam_environment(), "ARCHITECTURE": architecture},
    )


class SamLocal:
    def __init__(self, sam: str, image: str | None, env_vars: Path) -> None:
        self.sam = sam
        self.common = [
            "--template",
            str(WORK / "x86_64" / "template.yaml"),
            "--parameter-overrides",
            "Architecture=x86_64",
            "--env-vars",
            str(env_vars),
            "--add-host",
            "host.docker.internal:host-gateway",
            "--region",
            REGION,
        ]
        if image:
            self.common += ["--invoke-image", image, "--skip-pull-image"]

    def invoke(self, logical_id: str, event: Path) -> tuple[Any, str]:
        """The function's response (None if there was none) and what SAM and the function printed."""
        result = run(
            [self.sam, "local", "invoke", logical_id, "--event", str(event), *self.common],
            timeout=600,
            cwd=ROOT,
            env=sam_environment(),
        )
        output = result.stdout + result.stderr
        (WORK / f"invoke-{logical_id}.log").write_text(output)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        try:
            return (json.loads(lines[-1]) if lines else None), output
        except json.JSONDecodeError:
            return None, output

    def start_api(self, port: int) -> subprocess.Popen[bytes]:
        log = (WORK / "start-api.log").open("wb")
        return subprocess.Popen(  # noqa: S603 -- the project's own SAM CLI
            [self.sam, "local", "start-api", "--port", str(port), *self.common],
            cwd=ROOT,
            env=sam_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def tail(output: str, lines: int = 6) -> str:
    return " | ".join(output.strip().splitlines()[-lines:])


# --- the checks -----------------------------------------------------------------------------------


def signed_headers(webhook_id: str, body: str, secret: str) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(
            [decode_signing_key(secret)], webhook_id, timestamp, body.encode()
        ),
    }


def check_invocations(report: Report, sam: SamLocal, api: str, sandbox: str) -> None:
    print("sam local invoke, each function with its file in events/:", flush=True)
    signed = WORK / "moment-webhook.json"
    result = run([sys.executable, str(ROOT / "tools" / "sign_webhook_event.py"), "--out", str(signed)])
    report.check("webhook event signed into build/", result.returncode == 0, result.stderr)

    response, output = sam.invoke("WebhookReceiverFunction", signed)
    status = response.get("statusCode") if isinstance(response, dict) else None
    report.check("WebhookReceiverFunction answers 200", status == 200, f"{response!r} {tail(output)}")
    stored = httpx.get(f"{api}/events/{SAMPLE_WEBHOOK_ID}", timeout=30)
    report.check("  the webhook is stored (GET /events/{id})", stored.status_code == 200, stored.text)

    response, output = sam.invoke("LedgerApiFunction", ROOT / "events" / "ledger_api" / "put-customer.json")
    status = response.get("statusCode") if isinstance(response, dict) else None
    report.check("LedgerApiFunction answers 2xx", status in (200, 201), f"{response!r} {tail(output)}")
    customer = httpx.get(f"{api}/customers/{SAMPLE_CUSTOMER}", timeout=30)
    report.check(
        f"  customer {SAMPLE_CUSTOMER} exists in the ledger", customer.status_code == 200, customer.text
    )

    for name, event in (
        ("events/reconciler/stream-batch.json", ROOT / "events" / "reconciler" / "stream-batch.json"),
        ("AWS's generate-event dynamodb update", aws_dynamodb_sample(sam.sam)),
    ):
        response, output = sam.invoke("ReconcilerFunction", event)
        report.check(
            f"ReconcilerFunction: {name}, no batch item failures",
            response == {"batchItemFailures": []},
            f"{response!r} {tail(output)}",
        )

    # A charge, so that the customer's balance is ahead of Moment's and the pusher has work.
    charge = httpx.post(
        f"{api}/customers/{SAMPLE_CUSTOMER}/charges",
        json={"id": "C-samlocal", "amount": 45000, "description": "June"},
        timeout=30,
    )
    report.check(f"  a charge on {SAMPLE_CUSTOMER} through make local's API", charge.is_success, charge.text)
    for logical_id, folder in (
        ("BalancePusherFunction", "balance_pusher"),
        ("RedriveFunction", "redrive"),
        ("DailyReconcileFunction", "daily_reconcile"),
    ):
        response, output = sam.invoke(logical_id, ROOT / "events" / folder / "scheduled.json")
        ran = isinstance(response, dict) and "errorType" not in response and bool(response)
        report.check(f"{logical_id} runs to its summary", ran, f"{response!r} {tail(output)}")
        if logical_id == "BalancePusherFunction":
            state = httpx.get(f"{sandbox}/_sandbox/state", timeout=30).text
            report.check(
                f"  the pusher created {SAMPLE_CUSTOMER} at the Moment sandbox",
                SAMPLE_CUSTOMER in state,
                state[:300],
            )


def aws_dynamodb_sample(sam: str) -> Path:
    path = WORK / "generate-event-dynamodb-update.json"
    result = run([sam, "local", "generate-event", "dynamodb", "update"], env=sam_environment())
    path.write_text(result.stdout)
    return path


def check_start_api(report: Report, sam: SamLocal, stopper: Stopper) -> None:
    print("sam local start-api:", flush=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    process = sam.start_api(port)
    stopper.add("sam local start-api", process)
    wait_for("sam local start-api", lambda: process.poll() is None and _listening(port), 120)
    client = httpx.Client(base_url=api, timeout=300)
    webhook_id = f"msg_startapi{int(time.time())}"
    body = json.dumps(
        {
            "id": "evt_startapi1",
            "type": "obligation.amount_applied",
            "data": {
                "id": "ob_startapi1",
                "amount": 1500,
                "currency": "ZAR",
                "customer_id": "bcus_startapi1",
            },
        },
        separators=(",", ":"),
    )
    answer = client.post(
        "/webhooks/moment", content=body, headers=signed_headers(webhook_id, body, LOCAL_WEBHOOK_SECRET)
    )
    report.check(
        "POST /webhooks/moment signed: 200", answer.status_code == 200, f"{answer.status_code} {answer.text}"
    )
    stored = client.get(f"/events/{webhook_id}")
    report.check(
        "  GET /events/{id}: stored",
        stored.status_code == 200 and webhook_id in stored.text,
        f"{stored.status_code} {stored.text}",
    )
    forged_id = webhook_id + "forged"
    forged = client.post(
        "/webhooks/moment", content=body, headers=signed_headers(forged_id, body, FORGED_SECRET)
    )
    report.check(
        "POST /webhooks/moment forged: 401", forged.status_code == 401, f"{forged.status_code} {forged.text}"
    )
    missing = client.get(f"/events/{forged_id}")
    report.check("  the forged one is not stored (404)", missing.status_code == 404, f"{missing.status_code}")
    put = client.put("/customers/UCR2002", json={"currency": "ZAR", "name": "Sipho Dlamini"})
    report.check("PUT /customers/{ref}: 2xx", put.status_code in (200, 201), f"{put.status_code} {put.text}")
    charge = client.post(
        "/customers/UCR2002/charges", json={"id": "C-1", "amount": 45000, "description": "June"}
    )
    report.check(
        "POST /customers/{ref}/charges: 2xx",
        charge.status_code in (200, 201),
        f"{charge.status_code} {charge.text}",
    )
    read = client.get("/customers/UCR2002")
    report.check(
        "GET /customers/{ref}: the charge is the balance",
        read.status_code == 200 and read.json().get("balance") == 45000,
        f"{read.status_code} {read.text}",
    )


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_local_stack(stopper: Stopper, settings: LocalSettings) -> str:
    """`make local` on these ports, reachable from the containers; answers its API's URL."""
    environment = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'layers' / 'shared'}{os.pathsep}{ROOT / 'local'}",
        "LOCAL_API_PORT": str(settings.api_port),
        "LOCAL_SANDBOX_PORT": str(settings.sandbox_port),
        "LOCAL_AWS_PORT": str(settings.aws_port),
        "LOCAL_AWS_HOST": "0.0.0.0",  # noqa: S104 -- the containers reach it through the Docker bridge
        "LOCAL_PUSH_INTERVAL_SECONDS": "0",  # only sam local's invocations push and re-drive
        "LOCAL_REDRIVE_INTERVAL_SECONDS": "0",
        "LOCAL_FUNCTION_LOG": str(WORK / "local-function-output.jsonl"),
    }
    log = (WORK / "local-stack.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "local_stack"], env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    stopper.add("the local stack", process)
    api = f"http://127.0.0.1:{settings.api_port}"
    wait_for("the local stack", lambda: httpx.get(f"{api}/_local/status", timeout=2).status_code == 200, 120)
    return api


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    sam = os.environ.get("SAM") or str(ROOT / ".venv-sam" / "bin" / "sam")
    report = Report()
    stopper = Stopper()
    started = time.monotonic()
    try:
        ensure_docker(stopper)
        image = ensure_image()
        print(f"==> Lambda image: {image or OFFICIAL_IMAGE}", flush=True)
        print("sam build:", flush=True)
        for architecture in ("x86_64", "arm64"):
            result = sam_build(sam, architecture)
            (WORK / f"build-{architecture}.log").write_text(result.stdout + result.stderr)
            report.check(
                f"sam build, Architecture={architecture}", result.returncode == 0, tail(result.stderr)
            )
            platform = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}[architecture]
            output = result.stdout + result.stderr
            report.check(f"  the layer's wheels are for {platform}", f"--platform {platform}" in output)
        if report.failed:
            return finish(report, started)
        settings = LocalSettings(api_port=free_port(), sandbox_port=free_port(), aws_port=free_port())
        env_vars = WORK / "env.json"
        env_vars.write_text(json.dumps(env_file(settings), indent=2))
        api = start_local_stack(stopper, settings)
        sandbox = f"http://127.0.0.1:{settings.sandbox_port}"
        sam_local = SamLocal(sam, image, env_vars)
        check_invocations(report, sam_local, api, sandbox)
        check_start_api(report, sam_local, stopper)
    finally:
        stopper.stop_all()
    return finish(report, started)


def finish(report: Report, started: float) -> int:
    seconds = time.monotonic() - started
    verdict = "passed" if not report.failed else "FAILED: " + "; ".join(report.failed)
    print(
        f"sam-local-check: {report.passed} passed, {len(report.failed)} failed in {seconds:.0f} s ({verdict})"
    )
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
