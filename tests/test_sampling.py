"""Sampler: every Nth item exactly, random fractions reproducible with a seed."""

import random

import pytest

from nanostream import NanoStreamGraph, SequenceEmitter
from nanostream.config import ConfigErrors, load_text
from nanostream.nodes.sampling import Sampler
from nanostream.testing import collect, process_items, run_pipeline


async def test_every_nth_keeps_the_first_and_then_one_in_n_across_batches():
    for max_batch in (1, 3, 7, 512):
        out = await process_items(Sampler(every=3), range(20), max_batch=max_batch)
        assert out == [0, 3, 6, 9, 12, 15, 18], max_batch


async def test_every_one_and_fraction_one_keep_everything():
    assert await process_items(Sampler(), range(5)) == [0, 1, 2, 3, 4]
    assert await process_items(Sampler(fraction=0.0), range(5)) == []


async def test_a_seeded_fraction_draws_once_per_item_in_order():
    # The documented rule: item kept when random.Random(seed).random() < fraction.
    draws = random.Random(7)
    expected = [n for n in range(10_000) if draws.random() < 0.25]
    out = await process_items(Sampler(fraction=0.25, seed=7), range(10_000))
    assert out == expected
    # Binomial(10000, 0.25): the standard deviation is about 43.
    assert abs(len(out) - 2500) < 5 * 43


async def test_the_same_seed_gives_the_same_sample_however_items_are_batched():
    samples = [
        await process_items(Sampler(fraction=0.5, seed=3), range(2000), max_batch=max_batch)
        for max_batch in (1, 13, 512)
    ]
    assert samples[0] == samples[1] == samples[2]
    other = await process_items(Sampler(fraction=0.5, seed=4), range(2000))
    assert other != samples[0]


def test_every_and_fraction_together():
    graph = NanoStreamGraph()
    graph.add("numbers", SequenceEmitter([]))
    graph.add("sample", Sampler(every=10, fraction=0.5, seed=11), ["numbers"])
    out = run_pipeline(graph, inputs={"numbers": range(10_000)})["sample"]
    draws = random.Random(11)
    assert out == [n for n in range(0, 10_000, 10) if draws.random() < 0.5]


async def test_yaml_pipeline():
    graph = load_text(
        """\
node_sequence:
  - name: numbers
    class: SequenceEmitter
  - name: tenth
    class: Sampler
    parents: [numbers]
    every: 10
  - name: some
    class: Sampler
    parents: [numbers]
    fraction: 0.1
    seed: 1
"""
    )
    out = await collect(graph, inputs={"numbers": range(100)})
    assert out["tenth"] == list(range(0, 100, 10))
    draws = random.Random(1)
    assert out["some"] == [n for n in range(100) if draws.random() < 0.1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("fraction: 1.5", "parameter 'fraction': fraction must be between 0 and 1, not 1.5"),
        ("fraction: -0.1", "parameter 'fraction': fraction must be between 0 and 1, not -0.1"),
        ("every: 0", "parameter 'every': every must be 1 or more, not 0"),
        ("seed: abc", "parameter 'seed'"),
    ],
)
def test_yaml_errors(line, message):
    text = f"""\
node_sequence:
  - name: src
    class: SequenceEmitter
  - name: sample
    class: Sampler
    parents: [src]
    {line}
"""
    with pytest.raises(ConfigErrors) as excinfo:
        load_text(text, "p.yaml")
    (error,) = excinfo.value.errors
    assert error.format().startswith("p.yaml:7:")
    assert message in str(error)
