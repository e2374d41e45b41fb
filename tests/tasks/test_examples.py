"""GroupBatches: the one lazy, indexable batch sequence the tagging, translation and
tree tasks share."""
import pytest

from rnnkit.tasks.examples import GroupBatches


def _recording():
    calls = []

    def make_batch(group):
        calls.append(list(group))
        return ("batch", tuple(group))

    return calls, make_batch


def test_len_is_the_number_of_groups():
    assert len(GroupBatches([[0, 1], [2], [3, 4, 5]], lambda g: g)) == 3
    assert len(GroupBatches([], lambda g: g)) == 0
    assert list(GroupBatches([], lambda g: g)) == []


def test_lazy_make_batch_gets_the_groups_in_order():
    groups = [[4, 2], [0], [1, 3, 5]]
    calls, make_batch = _recording()
    batches = GroupBatches(groups, make_batch)
    assert calls == []                       # nothing built up front
    len(batches)
    assert calls == []
    first = list(batches)
    assert calls == groups                   # each group once, in order, unchanged
    assert first == [("batch", (4, 2)), ("batch", (0,)), ("batch", (1, 3, 5))]


def test_reiteration_gives_the_same_batches():
    groups = [[1, 0], [2, 3]]
    calls, make_batch = _recording()
    batches = GroupBatches(groups, make_batch)
    assert list(batches) == list(batches)
    assert calls == groups + groups          # built afresh each time, same order


def test_indexing_as_a_resumed_epoch_does():
    calls, make_batch = _recording()
    batches = GroupBatches([[0], [1], [2]], make_batch)
    assert batches[2] == ("batch", (2,))
    assert calls == [[2]]                    # only the batch asked for is built
    for bad in (3, -1):
        with pytest.raises(IndexError):
            batches[bad]
    assert calls == [[2]]
