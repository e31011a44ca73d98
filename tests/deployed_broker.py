"""Mosquitto as deployed: deploy/mosquitto/mosquitto.conf with only the listener, the file locations, the ingest
gate's path and the user replaced (tests/deploy/test_broker.py holds every broker fixture to that), and the step that
opens the ingest gate the way `pulse ingest` does."""

from __future__ import annotations

import getpass
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "deploy/mosquitto/mosquitto.conf"
GATE_SOURCE = ROOT / "deploy/mosquitto/ingest_gate.c"
GATE_BUILT = ROOT / "build/pulse_ingest_gate.so"
GATE_DEPLOYED = "/usr/local/lib/mosquitto/pulse_ingest_gate.so"
DYNSEC_DEPLOYED = "/mosquitto/config/dynamic-security.json"
PERSISTENCE_DEPLOYED = "persistence_location /mosquitto/data/"
# What a test's broker replaces in the deployed file, and what the image and compose file provide at those paths.
REPLACED = ("listener 1883", DYNSEC_DEPLOYED, PERSISTENCE_DEPLOYED, GATE_DEPLOYED)
INGEST_FILTER = "tenant/+/device/+/+"


def ingest_gate_plugin() -> Path:
    """The gate plugin built from its source (`make test` builds it first; this covers a plain pytest run)."""
    if not GATE_BUILT.exists() or GATE_BUILT.stat().st_mtime < GATE_SOURCE.stat().st_mtime:
        built = subprocess.run(["make", "-s", "-C", str(ROOT), "build/pulse_ingest_gate.so"], capture_output=True,
                               text=True)
        assert built.returncode == 0, f"building the ingest gate failed (scripts/services.sh installs the " \
                                      f"compiler and Mosquitto's headers):\n{built.stdout}{built.stderr}"
    return GATE_BUILT


def deployed_conf(directory: Path, port: int, admin: tuple[str, str]) -> Path:
    """Write `directory/mosquitto.conf`: the deployed file on 127.0.0.1:`port`, persistence in `directory`, and its
    dynamic-security file there with the `admin` account (deploy/mosquitto/init-dynsec.sh, as the image does)."""
    dynsec = directory / "dynamic-security.json"
    subprocess.run([str(ROOT / "deploy/mosquitto/init-dynsec.sh"), str(dynsec), *admin], check=True,
                   capture_output=True)
    conf = CONF.read_text()
    conf = (conf.replace("listener 1883", f"listener {port} 127.0.0.1")
            .replace(DYNSEC_DEPLOYED, str(dynsec))
            .replace(PERSISTENCE_DEPLOYED, f"persistence_location {directory}/")
            .replace(GATE_DEPLOYED, str(ingest_gate_plugin())))
    assert f"persistence_location {directory}/" in conf and str(GATE_BUILT) in conf
    conf += f"\n# the test's files belong to the test's user; run the broker as that user\nuser {getpass.getuser()}\n"
    path = directory / "mosquitto.conf"
    path.write_text(conf)
    return path


def open_ingest_gate(port: int, admin: tuple[str, str], ingest: tuple[str, str]) -> None:
    """Create the ingest account with deploy/mosquitto/create-ingest-account.sh and subscribe with it to the device
    topics once, as `pulse ingest` does on every connect: from then on the broker admits devices."""
    env = {**os.environ, "BROKER_PORT": str(port), "ADMIN_USERNAME": admin[0], "ADMIN_PASSWORD": admin[1],
           "INGEST_USERNAME": ingest[0], "INGEST_PASSWORD": ingest[1]}
    subprocess.run([str(ROOT / "deploy/mosquitto/create-ingest-account.sh")], env=env, check=True,
                   capture_output=True, timeout=30)
    subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-u", ingest[0], "-P", ingest[1],
                    "-q", "1", "-t", f"$share/tests/{INGEST_FILTER}", "-E"], check=True, capture_output=True,
                   timeout=30)
