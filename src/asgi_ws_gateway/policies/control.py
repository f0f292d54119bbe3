"""``choose``: apply nested policies only when a condition on the context holds.

::

    - choose:
        when:
          - if: {ref: jwt.plan, equals: free}          # one condition, or a list: all must hold
            policies:
              - rate-limit-by-key: {key: "{jwt.sub}", limit: 5, window: 60}
          - if: [{ref: header.x-debug, exists: true}, {ref: client.ip, matches: "^10\\\\."}]
            policies: [{set-header: {header: X-Debug, value: "1"}}]
        otherwise:
          - rate-limit-by-key: {key: "{jwt.sub}", limit: 50, window: 60}

The first branch whose conditions all hold runs; if none does, ``otherwise`` runs.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator

from ..config.fields import PolicyEntry
from ..handshake.context import HandshakeContext
from ..handshake.pipeline import Policy, run_policies
from ..strict_numbers import StrictNumbers
from ..templates import Condition, Reference, TemplateError
from .base import MatchSettings, PolicyEnv, PolicySettings, register_policy


class ConditionSettings(MatchSettings):
    """A test on one context value: ``{ref: header.x-tenant, exists: true}``."""

    ref: str = Field(description="What to test: jwt.claim, header.name, query.name, path.param, client.ip, ...")

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        try:
            Reference.parse(value)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return value


class Branch(StrictNumbers):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)

    conditions: ConditionSettings | list[ConditionSettings] = Field(
        alias="if", description="A condition, or a list of conditions that must all hold."
    )
    policies: list[PolicyEntry] = Field(default_factory=list)


class ChooseSettings(PolicySettings):
    """``choose``: the first ``when`` branch whose conditions hold runs its policies; else ``otherwise``."""

    when: list[Branch] = Field(min_length=1)
    otherwise: list[PolicyEntry] = Field(default_factory=list)


@register_policy("choose")
class Choose:
    Settings = ChooseSettings

    def __init__(self, settings: ChooseSettings, env: PolicyEnv) -> None:
        self.name = "choose"
        self.branches: list[tuple[list[Condition], list[Policy]]] = []
        for i, branch in enumerate(settings.when):
            conditions = branch.conditions if isinstance(branch.conditions, list) else [branch.conditions]
            self.branches.append(
                ([c.condition(c.ref) for c in conditions], env.build(branch.policies, ("when", i, "policies")))
            )
        self.otherwise = env.build(settings.otherwise, ("otherwise",))

    async def apply(self, context: HandshakeContext) -> None:
        for conditions, policies in self.branches:
            if all(condition.holds(context) for condition in conditions):
                await run_policies(policies, context)
                return
        await run_policies(self.otherwise, context)


__all__ = ["Choose", "ConditionSettings"]
