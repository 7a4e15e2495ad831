"""Negotiation messages: validated, versioned, and harmless when malformed."""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuparley.agents.negotiators.simple import Truthful
from gpuparley.envs import gpu_market_v1
from gpuparley.envs.market.demand import demand_of
from gpuparley.envs.market.episode import play_episode
from gpuparley.envs.market.messages import (
    API_VERSION,
    Bid,
    Lease,
    MessageError,
    Release,
    ResourceItem,
    json_schemas,
    parse_message,
    trusted,
)


def fresh_market(mechanism="auction"):
    env = gpu_market_v1.parallel_env(scenario="tiny", mechanism=mechanism)
    env.reset(seed=0)
    # let jobs arrive
    while not env.market.sim.pending():
        env.step(dict.fromkeys(env.agents, 0))
    return env.market


def state_of(market):
    return copy.deepcopy(
        (
            market.ledger.balances,
            market.committed,
            dict(market.leases),
            sorted(market.sim.state.holdings),
            sorted(getattr(market.mechanism, "bids", {})),
            sorted(getattr(market.mechanism, "threads", {})),
            market.stats.proposals,
        )
    )


def a_valid_bid(market, **changes):
    job = market.sim.pending()[0]
    data = Bid(
        id="m-1",
        sender=job.owner,
        receiver="market",
        epoch=market.epoch,
        demand=demand_of(job),
        price=0.1,
        term_epochs=market.term_epochs,
    ).model_dump()
    data.update(changes)
    return data


def test_a_valid_bid_round_trips_through_json():
    market = fresh_market()
    bid = parse_message(a_valid_bid(market))
    assert parse_message(bid.model_dump_json()) == bid
    assert bid.api_version == API_VERSION
    assert market.receive(bid).accepted


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"price": -1.0}, "price"),
        ({"price": float("nan")}, "price"),
        ({"api_version": "gpuparley.io/v0"}, "api_version"),
        ({"kind": "Bribe"}, "kind"),
        ({"sender": "Not A Name!"}, "sender"),
        ({"term_epochs": 0}, "term_epochs"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_malformed_messages_are_rejected_with_the_field_named(changes, reason):
    market = fresh_market()
    before = state_of(market)
    receipt = market.receive(a_valid_bid(market, **changes))
    assert not receipt.accepted and reason in receipt.reason
    assert state_of(market) == before
    with pytest.raises(MessageError, match=reason):
        parse_message(a_valid_bid(market, **changes))


def test_stale_replayed_and_forged_messages_change_nothing():
    market = fresh_market()
    bid = a_valid_bid(market)
    owner = bid["sender"]
    before = state_of(market)
    others = [a for a in market.agents if a != owner]
    cases = {
        "stale": a_valid_bid(market, epoch=market.epoch + 7),
        "forged": a_valid_bid(market, sender=others[0]),  # bids for someone else's job
        "unknown": a_valid_bid(market, sender="mallory"),
        "lease": {**a_valid_bid(market), "kind": "Release", "lease_id": "x", "reason": "expired"},
    }
    for name, message in cases.items():
        receipt = market.receive(message)
        assert not receipt.accepted, name
        assert state_of(market) == before, name
    assert market.receive(bid).accepted
    assert not market.receive(bid).accepted  # replayed id
    assert sum(market.stats.rejected.values()) >= len(cases) + 1


def test_a_bid_is_a_value_but_an_offer_is_a_promise_to_pay():
    """An auction bid may exceed the balance (the auction checks what is paid, not what is
    bid); a bargaining offer may not (it is paid on acceptance)."""
    auction = fresh_market()
    assert auction.receive(a_valid_bid(auction, price=1e9)).accepted
    assert auction.free_balance(auction.sim.pending()[0].owner) < 0  # committed, not paid
    bargain = fresh_market("bargain")
    job = bargain.sim.pending()[0]
    lender = next(a for a in bargain.agents if a != job.owner)
    offer = {
        **a_valid_bid(bargain, price=1e9, receiver=lender),
        "kind": "Offer",
        "round": 1,
    }
    before = state_of(bargain)
    receipt = bargain.receive(offer)
    assert not receipt.accepted and "balance" in receipt.reason
    assert state_of(bargain) == before


MARKET = fresh_market("bargain")  # module-level: hypothesis examples share it read-only


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["kind", "id", "sender", "receiver", "epoch", "price", "demand", "in_reply_to", "round"]
        ),
        st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=8), st.booleans()),
    )
)
def test_any_garbage_is_rejected_without_a_crash_or_a_change(garbage):
    market = MARKET
    before = state_of(market)
    receipt = market.receive(garbage)
    assert not receipt.accepted
    assert state_of(market) == before


def test_schemas_exist_for_every_message_kind():
    schemas = json_schemas()
    assert {"Bid", "Offer", "CounterOffer", "Accept", "Reject", "Lease", "Release"} == set(schemas)
    assert schemas["Bid"]["properties"]["price"]["minimum"] == 0


def test_a_trusted_message_is_the_one_validation_would_build():
    market = fresh_market()
    job = market.sim.pending()[0]
    item = {"pod": 0, "node": "a100-0", "gpu_kind": "whole", "gpus": (0, 1), "gpu_milli": 0}
    cases = [
        (
            Bid,
            {
                "id": "m-1",
                "sender": job.owner,
                "receiver": "market",
                "epoch": 0,
                "demand": demand_of(job),
                "price": 0.5,
                "term_epochs": 3,
                "renewal_of": None,
            },
        ),
        (ResourceItem, item),
        (
            Lease,
            {
                "id": "market.0.lease.1",
                "sender": "market",
                "receiver": "alice",
                "epoch": 2,
                "lease_id": "lease-1",
                "holder": "alice",
                "lender": "market",
                "job": "gen-000001",
                "resources": (ResourceItem.model_validate(item),),
                "quota_milli": 0,
                "start_epoch": 2,
                "expires_epoch": 14,
                "price": 1.25,
                "reclaim_notice_epochs": 0,
            },
        ),
        (
            Release,
            {
                "id": "market.2.7",
                "sender": "market",
                "receiver": "alice",
                "epoch": 2,
                "lease_id": "lease-1",
                "reason": "finished",
            },
        ),
    ]
    for model, values in cases:
        built, validated = trusted(model, values), model.model_validate(values)
        assert built == validated
        assert repr(built) == repr(validated)  # the fields in the same order
        assert built.model_fields_set == validated.model_fields_set
        assert built.model_dump_json() == validated.model_dump_json()


@pytest.mark.parametrize("mechanism", ["auction", "bargain"])
def test_every_message_the_market_builds_itself_is_valid(mechanism):
    env = gpu_market_v1.parallel_env(scenario="tiny", mechanism=mechanism)
    play_episode(env, Truthful(), 0)
    market = env.market
    built = [message for pair in market.releases for message in pair]
    built += list(market.leases.values())
    assert built
    for message in built:
        assert type(message).model_validate(message.model_dump()) == message
