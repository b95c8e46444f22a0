"""services/common/db.py `why`: a database error in one short line, in the server's own words."""

from __future__ import annotations

from pymongo.errors import BulkWriteError, OperationFailure, ServerSelectionTimeoutError

from services.common.db import why

FERRETDB_FULL = ("[msg_findandmodify.go:196 handler.(*Handler).findAndModifyDocument] [update.go:114 "
                 "common.UpdateDocument] [db.go:167 fsql.(*DB).InTransaction] database or disk is full (13)")


def test_ferretdbs_call_frames_are_dropped_and_the_details_left_out():
    exc = OperationFailure(FERRETDB_FULL, 1, {"ok": 0, "errmsg": FERRETDB_FULL, "code": 1})
    assert "full error" in str(exc)  # what logging `exc` itself used to print
    assert why(exc) == "OperationFailure: database or disk is full (13)"


def test_a_refused_bulk_write_names_its_first_refusal():
    exc = BulkWriteError({"writeErrors": [{"index": 0, "code": 8000,
                                           "errmsg": "you are over your space quota, using 513 MB of 512 MB"}]})
    assert why(exc) == "BulkWriteError: you are over your space quota, using 513 MB of 512 MB"


def test_a_long_message_is_cut():
    assert len(why(ServerSelectionTimeoutError("127.0.0.1:27017: refused " + "x" * 1000))) == 200
