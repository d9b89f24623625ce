"""Base model and the small Kubernetes-shaped types shared by both kinds."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# JSON-schema hints the CRD generator turns into Kubernetes schema extensions.
PRESERVE = {"x-kubernetes-preserve-unknown-fields": True}
# the most any ...Seconds field may say (about 31 years): the engine adds these to timestamps, and a
# larger number overflows a datetime (the API server refuses it, naming the field)
MAX_SECONDS = 1_000_000_000


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, Any]:
    """One CEL `x-kubernetes-validations` rule."""
    out: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are an error."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def dump(self) -> dict[str, Any]:
        """The wire form: camelCase, without unset/None fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = Annotated[
    int | Annotated[str, Field(pattern=QUANTITY_PATTERN)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
Object = Annotated[dict[str, Any], Field(json_schema_extra=PRESERVE)]
_QUANTITY_SUFFIX = {
    **{s: Decimal(1024**i) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
    **{s: Decimal(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("", 0), ("k", 3), ("M", 6), ("G", 9))},
    **{s: Decimal(10) ** e for s, e in (("T", 12), ("P", 15), ("E", 18))},
}
_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE]?)")


def parse_quantity(value: int | float | str) -> Decimal:
    """A Kubernetes quantity ("500m", "16Gi", "1e3", 2) as a Decimal: cores, bytes or a count."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    match = _QUANTITY.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = match.groups()
    if suffix[:1] in ("e", "E"):
        return Decimal(number + suffix)
    return Decimal(number) * _QUANTITY_SUFFIX[suffix]


class ObjectMeta(BaseModel):
    """The part of metadata scriptrun reads; everything else is kept as is."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = ""
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None


class ConditionStatus:
    TRUE = "True"
    FALSE = "False"


class Condition(ApiModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", description="CamelCase reason for the last transition.")
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


NO_NUL_PATTERN = r"^[^\x00]*$"
ProcessString = Annotated[str, Field(pattern=NO_NUL_PATTERN)]
"""An argument or environment value of the script's process: a C string, so without NUL (a pod
takes one, but its container could never start)."""


class EnvVar(ApiModel):
    name: str = Field(min_length=1)
    value: ProcessString | None = None
    value_from: Object | None = None


class ConfigMapKeyRef(ApiModel):
    name: str = Field(min_length=1, max_length=253, description="ConfigMap in the run's namespace.")
    key: str = Field(default="main.py", min_length=1, description="Key holding the script.")


class Resources(ApiModel):
    """Container resources, as in a Pod."""

    requests: dict[str, Quantity] | None = None
    limits: dict[str, Quantity] | None = None


class PodMetadata(ApiModel):
    """Extra labels and annotations put on every pod of the run."""

    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
