"""The market's questions and the agents' answers: what each agent with a decision is asked at a
sub-step (its view document: the environment's view, what a reply must name, and under the
auction its lookahead), the documents of the asked agents written as the ConfigMap
`gpuparley-market-view` in their home namespaces, and the answers read back from the Negotiator
watch -- answers to the asked view (under the auction with the bid itself), and answers given
ahead (`answers_ahead.py`, with their bids) taken when the document they answered is the one the
market would send.
"""

from __future__ import annotations

import json
from typing import Any

from gpuparley.deploy import objects
from gpuparley.deploy.answers_ahead import LOOKAHEAD_KEY, answer_for, view_digest
from gpuparley.deploy.informer import Informer
from gpuparley.deploy.kube import Kube
from gpuparley.envs.market.parallel_env import GPUMarketEnv
from gpuparley.envs.market.views import lookaheads
from gpuparley.envs.market.wire import lookahead_to_dict, view_to_dict


class Questions:
    """The views out and the answers in, for one market."""

    def __init__(self, kube: Kube, env: GPUMarketEnv, negotiators: Informer) -> None:
        assert env.market is not None
        self.kube = kube
        self.env = env
        self.market = env.market
        self.agents = list(self.market.agents)
        self.negotiators = negotiators

    def documents(self, agents: list[str], token: tuple[int, int]) -> dict[str, dict[str, Any]]:
        """What each of `agents` is asked at this sub-step: its view and what its answer must
        name; under the auction also its lookahead (`answers_ahead.py`)."""
        market = self.market
        ahead = lookaheads(market) if market.mechanism.name == "auction" and agents else {}
        documents = {}
        for agent in agents:
            documents[agent] = {
                "epoch": token[0],
                "substep": token[1],
                "term_epochs": market.term_epochs,
                "mechanism": market.mechanism.name,
                "view": view_to_dict(self.env.views[agent]),
                **self._routing(agent),
            }
            if agent in ahead:
                documents[agent][LOOKAHEAD_KEY] = lookahead_to_dict(ahead[agent])
        return documents

    def open_views(self) -> None:
        """Create each agent's view ConfigMap, empty (no question yet), where it does not exist:
        at start-up, so that asking costs one write from the first question on."""

        def create(agent: str) -> None:
            empty = {"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": objects.VIEW_CONFIGMAP}, "data": {}}  # fmt: skip
            self.kube.create("configmaps", objects.agent_namespace(agent), empty)  # None: exists

        self.kube.each(create, self.agents)

    def publish(self, documents: dict[str, dict[str, Any]]) -> None:
        """Each asked agent's view, written all at once (one round trip before they think)."""

        def publish(agent: str) -> None:
            self.kube.apply_configmap(
                objects.agent_namespace(agent),
                objects.VIEW_CONFIGMAP,
                {objects.VIEW_KEY: json.dumps(documents[agent])},
            )

        self.kube.each(publish, list(documents))

    def _routing(self, agent: str) -> dict[str, Any]:
        """What a bargaining agent's reply must name that its view does not say (in the
        simulator `Market.decide` fills it in): the negotiation awaiting its answer -- the
        message to reply to, the other party, the round. (Proposals are addressed by the
        market at the proposer's turn: `market_intake.py`.)"""
        mechanism = self.market.mechanism
        thread = mechanism.pending_answer(agent) if mechanism.name == "bargain" else None
        if thread is None:
            return {}
        reply = {"in_reply_to": thread.last_id, "receiver": thread.other(agent)}
        return {"reply": {**reply, "round": thread.round}}

    def _statuses(self) -> dict[str, dict[str, Any]]:
        """agent -> its Negotiator status, from the Negotiator watch."""
        statuses = {}
        for negotiator in self.negotiators.objects():
            agent = (negotiator.get("spec") or {}).get("agent")
            home = negotiator["metadata"].get("namespace")
            if agent in self.agents and home == objects.agent_namespace(agent):
                statuses[agent] = negotiator.get("status") or {}
            # (a Negotiator object elsewhere cannot answer for an agent)
        return statuses

    def _answering(self, token: tuple[int, int]) -> dict[str, dict[str, Any]]:
        """agent -> its Negotiator status, for the agents whose status answers this sub-step."""
        return {
            agent: status
            for agent, status in self._statuses().items()
            if (status.get("observedEpoch"), status.get("observedSubstep")) == token
        }

    def answers(self, token: tuple[int, int]) -> dict[str, tuple[str, str]]:
        """agent -> (its action, its message id) for this sub-step, asked."""
        return {
            agent: (status.get("action", "pass"), str(status.get("message") or ""))
            for agent, status in self._answering(token).items()
        }

    def bids(self, token: tuple[int, int], agents: list[str]) -> dict[str, dict[str, Any]]:
        """agent -> the bid its Negotiator status holds as its answer to this sub-step (the
        auction's bids travel there; bargaining messages are Offer objects)."""
        return {
            agent: status["bid"]
            for agent, status in self._answering(token).items()
            if agent in agents and isinstance(status.get("bid"), dict)
        }

    def answered_ahead(
        self, documents: dict[str, dict[str, Any]], token: tuple[int, int]
    ) -> dict[str, dict[str, Any]]:
        """agent -> its answer given ahead (`action`, `message` id, `bid`) for exactly the view
        document the market would send it now; the other agents are asked."""
        statuses = self._statuses()
        answers = {}
        for agent, document in documents.items():
            answer = answer_for(statuses.get(agent) or {}, token[1], view_digest(document))
            if answer is not None:
                answers[agent] = answer
        return answers
