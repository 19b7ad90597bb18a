"""A frame record travels in every task that reads the frame: it pickles whole and small."""

import copy
import dataclasses
import pickle

from test_grid import frame

from zemosaic_dask.plans import FrameInfo
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
