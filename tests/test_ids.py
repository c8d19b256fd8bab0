from __future__ import annotations

from service.domain.ids import ID_LENGTH, is_valid_path_id, new_id


def test_ids_are_path_safe_unique_and_ordered_by_time() -> None:
    ids = [new_id(now_ms=1_700_000_000_000 + step) for step in range(200)]
    assert all(len(value) == ID_LENGTH and is_valid_path_id(value) for value in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_path_id_rule() -> None:
    assert is_valid_path_id("abc_DEF-123")
    assert not is_valid_path_id("a" * 65)
    assert not is_valid_path_id("$where")
    assert not is_valid_path_id("")
    assert not is_valid_path_id("a.b")
