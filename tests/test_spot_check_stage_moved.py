"""A spot check whose stage moved since its result (the user pans during live) lit the field the stage was at,
charged that light to the result's field, and then skipped the check ('stage moved'): a field's light budget
missed light it got, another's counted light it never got, and the light compared nothing. Now the stage is read
before any light: a moved stage skips the check with no light and no charge."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import wait_until
from scopecast.daemon.stream import StreamSubscriber
from tests.test_spot_checks import VS, _vs_live


@pytest.mark.skipif(not (VS / "manifest.json").exists(), reason="the virtual-staining package is not shipped")
def test_a_check_after_the_stage_moved_spends_no_light(daemon, client):
    with _vs_live(daemon, client) as (engine, _):
        # results from nowhere: the checker's own loop checks nothing; this test hands it a result
        client.request("start_spot_checks", model="virtual-staining", results="tcp://127.0.0.1:9", period_s=3600,
                       record=False)
        checker = daemon.spot_checkers["virtual-staining"]
        results = StreamSubscriber(engine.results_address, ("result",))
        try:  # a result whose bundle the checker's ring holds (acquired after it started)
            _, header, data = wait_until(
                lambda: (m := results.recv(1)) and len(checker.ring.bundle(m[1]["acquisition_id"],
                                                                           m[1]["bundle_id"])) == 6 and m,
                180, "a result of a bundle in the spot checker's ring")
        finally:
            results.close()
        client.request("move_stage", x=200.0, y=0.0)  # the user moves on to another field
        checker._check(header, np.asarray(data, np.float32))
        st = client.request("spot_checks")["models"]["virtual-staining"]
    assert st["dose_session"] == 0 and st["shared_budget"]["dose_by_source"] == {}, st["dose_by_position"]
    assert st["skipped"] == {"stage moved": 1}, st["skipped"]
    assert st["last_skip"] == "stage moved: 200.0 µm since the result (no light spent)", st["last_skip"]
