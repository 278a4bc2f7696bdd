"""What ``issuer serve`` sets in each worker process besides the app
(``issuer.app.create_app_from_env``): the garbage collector's thresholds and the
interpreter's switch interval."""

from __future__ import annotations

import gc
import sys

from issuer.app import create_app_from_env
from issuer.serving import SWITCH_INTERVAL


def test_a_worker_hands_the_gil_over_within_the_serving_switch_interval(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env of the caller's
    monkeypatch.setenv("ISSUER_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'issuer.db'}")
    monkeypatch.setenv("ENCRYPTION_MASTER_KEY", "ab" * 32)
    switch, thresholds = sys.getswitchinterval(), gc.get_threshold()
    try:
        create_app_from_env()
        assert sys.getswitchinterval() == SWITCH_INTERVAL < 0.005
        assert gc.get_threshold() == (50_000, 20, 20)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(switch)
