"""`pulse simulate`: simulated devices — seeded value profiles (pure) and the MQTT loop that publishes them.

Each simulated device holds its own MQTT connection (client id `pulse-sim-<tenant>-<device>`) and
speaks MQTT 3.1.1: it is a device, and 3.1.1 is what most device firmware speaks. It also keeps the
simulator working against the embedded dev broker (amqtt refuses MQTT 5 CONNECTs) without gmqtt's
6-second downgrade-and-retry. Credentials, if any, come from PULSE_MQTT_URL's user info; against a
broker with per-device accounts, give the simulator an account allowed to publish under
`tenant/<tenant>/device/+/…`. After the first connection gmqtt reconnects by itself (no retry limit)
when the broker restarts; messages due while a device is disconnected are dropped, not queued.

Messages (QoS 1) on `tenant/{tenant_id}/device/{device_id}/telemetry`:
    {"version": "1", "ts": "2026-11-23T09:00:00.000Z", "seq": 17, "metrics": {...}}
(GPS trackers add "lat"/"lng" to the envelope) and every 30 s on `.../heartbeat`:
    {"version": "1", "ts": "...", "seq": 18}
`seq` counts per device across both kinds and continues from device_state.last_seq on restart.
"""

from pulse.simulate.devices import SimDeviceSpec, prepare_devices
from pulse.simulate.loop import run
from pulse.simulate.profiles import PROFILES, SimDevice, iso_utc, profile_for

__all__ = ["PROFILES", "SimDevice", "SimDeviceSpec", "iso_utc", "prepare_devices", "profile_for", "run"]
