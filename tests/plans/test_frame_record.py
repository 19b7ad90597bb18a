"""A frame record travels in every task that reads the frame: it pickles whole and small."""

import copy
import dataclasses
import gc
import pickle

from test_grid import frame

from zemosaic_dask.plans import FrameInfo
from zemosaic_dask.plans import frames as frames_module
from zemosaic_dask.plans.frame_quality import FrameQuality


def full_record() -> FrameInfo:
    base = frame(150.0, 35.0, rot=3.0).with_sky_geometry()
    quality = FrameQuality(412, 3.1, 1.08, 12.5, ((1.0, 2.0, 3.0),))
    return dataclasses.replace(
        base, noise=(11.0, 12.5, 10.2), background=(300.0, 400.0, 250.0), quality=quality, content_hash="ab" * 16
    )


def test_a_pickled_frame_comes_back_equal_with_its_wcs():
    record = full_record()
    for protocol in (2, pickle.DEFAULT_PROTOCOL, 5):
        back = pickle.loads(pickle.dumps(record, protocol=protocol))
        assert back == record and hash(back) == hash(record)
        assert back.wcs_header == record.wcs_header
        assert back.wcs.wcs.compare(record.wcs.wcs)
    assert copy.deepcopy(record) == record and copy.copy(record) == record


def test_a_pickled_frame_carries_its_wcs_header_compressed():
    record = full_record()
    size = len(pickle.dumps(record, protocol=5))
    plain = {field.name: getattr(record, field.name) for field in dataclasses.fields(record)}
    as_fields = len(pickle.dumps(plain, protocol=5))  # what the default pickling of the dataclass holds
    assert size < as_fields - len(record.wcs_header) // 2


def test_a_process_that_holds_the_record_reuses_it():
    """The embedded cluster's scheduler unpickles the client's records: it gets the same objects."""
    record = full_record()
    payload = pickle.dumps([record, record], protocol=5)
    back = pickle.loads(payload)
    assert back[0] is record and back[1] is record


def test_a_process_that_does_not_hold_it_builds_one_record_per_frame():
    record = full_record()
    payloads = [pickle.dumps(record, protocol=5) for _ in range(3)]
    other = dataclasses.replace(record, noise=(11.0, 12.5, 10.3))
    other_payload = pickle.dumps(other, protocol=5)
    frames_module._RECORDS.clear()  # as on a worker that has not seen these frames
    first, *rest = (pickle.loads(p) for p in payloads)
    assert first == record and first is not record
    assert all(r is first for r in rest)  # three tasks naming the frame share one record
    different = pickle.loads(other_payload)
    assert different == other and different != first  # a record differing in one value is not merged


def test_equal_records_made_apart_share_their_digest_and_nothing_is_kept_alive():
    a, b = full_record(), full_record()
    assert a is not b
    pickle.dumps(a)
    assert pickle.loads(pickle.dumps(b)) is a  # equal values: the record already held is reused
    assert a.__dict__["_digest"] == b.__dict__["_digest"]
    key = a.__dict__["_digest"]
    del a, b
    gc.collect()
    assert key not in frames_module._RECORDS  # the registry holds no record by itself
