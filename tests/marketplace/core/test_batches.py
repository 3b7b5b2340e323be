import logging

from marketplace.core.batches import each_on_its_own


def test_one_failure_is_logged_and_the_others_still_run(caplog):
    seen = []

    def action(pk):
        if pk == 2:
            raise RuntimeError("boom")
        seen.append(pk)

    with caplog.at_level(logging.ERROR, logger="marketplace.core.batches"):
        done = each_on_its_own([1, 2, 3], action, what="node sweep")

    assert done == 2
    assert seen == [1, 3]
    [record] = caplog.records
    assert record.getMessage() == "node sweep failed"
    assert record.id == 2
