"""What an owner concludes from the broker's answer about its inputs (``streams.agents.time_order``)."""

from __future__ import annotations

from streams.agents.time_order import InputsAnswer

A = ("cdc.acct.customer", 0)
B = ("cdc.crm.customer", 1)


def test_an_input_whose_router_committed_past_the_first_event_at_the_time_passed_it():
    # B's first event stamped 2,000 or later is at 4; its router committed offset 5
    answer = InputsAnswer(at_ms=2_000, first_at_or_after={B: 4}, ends={A: 3, B: 9}, committed={A: 3, B: 5})
    assert answer.behind() == []


def test_an_input_whose_router_has_not_committed_that_far_is_behind():
    answer = InputsAnswer(at_ms=3_000, first_at_or_after={B: 7}, ends={A: 3, B: 9}, committed={A: 3, B: 5})
    assert answer.behind() == [B]


def test_an_input_never_committed_is_behind_until_its_router_commits():
    answer = InputsAnswer(at_ms=1_000, first_at_or_after={B: 2}, ends={A: 3, B: 9}, committed={A: 3, B: -1001})
    assert answer.behind() == [B]


def test_an_input_committed_to_its_end_passed_the_time_without_being_asked():
    answer = InputsAnswer(at_ms=5_000, first_at_or_after={}, ends={A: 3, B: 9}, committed={A: 3, B: 9})
    assert answer.behind() == []


def test_an_input_with_nothing_at_the_time_must_be_committed_to_its_end():
    answer = InputsAnswer(at_ms=5_000, first_at_or_after={B: -1}, ends={B: 9}, committed={B: 8})
    assert answer.behind() == [B]


def test_a_first_offset_asked_after_the_end_counts_no_further_than_the_end():
    # nothing stamped 5,000 or later when the end (9) was asked; a later event landed at 12 meanwhile
    answer = InputsAnswer(at_ms=5_000, first_at_or_after={B: 12}, ends={B: 9}, committed={B: 9})
    assert answer.behind() == []
