"""``cycleguard tenant|key|budget|policy|balances|reservations``: thin commands over the clients.

Admin-plane commands call :class:`~cycleguard.admin.AdminClient` with the admin
key (budgets and policies also accept a tenant's API key); ``balances`` and
``reservations`` call :class:`~cycleguard.CyclesClient` with an API key. Each
prints rich tables, or with ``--json`` the answer as one JSON document. A
failure is one line on stderr and exit status 1; keys never appear in output
(except the new secret ``key create`` prints, once).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Literal, TypeAlias

import anyio
from returns.result import Success

from cycleguard import (
    Amount,
    Caps,
    ClientConfig,
    CyclesClient,
    OveragePolicy,
    ReservationStatus,
    Subject,
    Unit,
)
from cycleguard._core._wire import to_wire
from cycleguard.admin import (
    AdminClient,
    ApiKeyCreateRequest,
    BudgetCreateRequest,
    BudgetFundingRequest,
    BudgetStatusTransitionRequest,
    FundingOperation,
    PolicyCreateRequest,
    TenantCreateRequest,
    TenantStatus,
    TenantUpdateRequest,
)
from cycleguard.cli._output import (
    describe_error,
    fail,
    print_changes,
    print_json,
    print_note,
    print_page,
    print_record,
    print_rows,
)
from cycleguard.errors import UsageError
from cycleguard.server.cli import ADMIN_KEY_ENV

if TYPE_CHECKING:
    import enum
    from collections.abc import Awaitable, Callable

    from attrs import AttrsInstance
    from returns.result import Result

    from cycleguard import JsonObject
    from cycleguard.__main__ import Commands
    from cycleguard.errors import CyclesError

    Answer: TypeAlias = Awaitable[Result[JsonObject, CyclesError]]
    Render: TypeAlias = Callable[[JsonObject], None]

__all__ = ("API_KEY_ENV", "BASE_URL_ENV", "DEFAULT_BASE_URL", "add_admin_commands")

BASE_URL_ENV = "CYCLES_BASE_URL"
API_KEY_ENV = "CYCLES_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:7878"

# Which key a command sends: the admin key only, the admin key or else a tenant's
# API key (budgets and policies), or a tenant's API key (the runtime plane).
Needs = Literal["admin", "either", "api"]

TENANT_COLUMNS = (
    ("tenant", "tenant_id"),
    ("name", "name"),
    ("status", "status"),
    ("created", "created_at"),
)
KEY_COLUMNS = (
    ("key", "key_id"),
    ("tenant", "tenant_id"),
    ("name", "name"),
    ("prefix", "key_prefix"),
    ("status", "status"),
    ("expires", "expires_at"),
)
# Lists keep to what fits 80 columns; `show` and `--json` have every field.
AMOUNT_COLUMNS = (
    ("allocated", "allocated"),
    ("remaining", "remaining"),
    ("reserved", "reserved"),
    ("spent", "spent"),
)
BUDGET_COLUMNS = (("scope", "scope"), ("unit", "unit"), *AMOUNT_COLUMNS, ("status", "status"))
BALANCE_COLUMNS = (("scope", "scope"), ("unit", "unit"), *AMOUNT_COLUMNS, ("debt", "debt"))
POLICY_COLUMNS = (
    ("policy", "policy_id"),
    ("name", "name"),
    ("pattern", "scope_pattern"),
    ("priority", "priority"),
    ("status", "status"),
    ("caps", "caps"),
)
RESERVATION_COLUMNS = (
    ("reservation", "reservation_id"),
    ("status", "status"),
    ("scope", "scope_path"),
    ("unit", "unit"),
    ("reserved", "reserved"),
    ("expires", "expires_at_ms"),
)
SUBJECT_FLAGS = ("tenant", "workspace", "app", "workflow", "agent", "toolset")


# Arguments ------------------------------------------------------------------------


def _whole(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


def _choices(cls: type[enum.Enum]) -> list[str]:
    return [str(member.value) for member in cls]


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def _leaf(actions: Commands, name: str, text: str, needs: Needs) -> argparse.ArgumentParser:
    """A command parser with the flags every command shares."""
    parser = actions.add_parser(name, help=text, description=_sentence(text))
    parser.add_argument(
        "--base-url", help=f"server URL (default: ${BASE_URL_ENV}, else {DEFAULT_BASE_URL})"
    )
    if needs != "api":
        parser.add_argument("--admin-key", help=f"admin API key (default: ${ADMIN_KEY_ENV})")
    if needs != "admin":
        parser.add_argument("--api-key", help=f"a tenant's API key (default: ${API_KEY_ENV})")
    parser.add_argument(
        "--json", action="store_true", dest="as_json", help="print the answer as JSON"
    )
    return parser


def _actions(commands: Commands, name: str, text: str) -> Commands:
    """A command whose actions (``create``, ``list``...) are subcommands."""
    parser = commands.add_parser(name, help=text, description=_sentence(text))
    return parser.add_subparsers(title="actions", metavar="ACTION", required=True)


def _add_page_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_whole, help="rows per page")
    parser.add_argument("--cursor", help="the page after the one that printed this cursor")


def _add_subject_flags(parser: argparse.ArgumentParser) -> None:
    for level in SUBJECT_FLAGS:
        parser.add_argument(f"--{level}", help=f"only the subject's {level}")


def _add_budget_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scope", required=True, help="scope path, e.g. tenant:acme/agent:bot")
    parser.add_argument("--unit", required=True, choices=_choices(Unit))


# Running ----------------------------------------------------------------------------


def _base_url(args: argparse.Namespace) -> str:
    url: str = args.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return url


def _key(args: argparse.Namespace, flag: str, env: str) -> str | None:
    key: str | None = getattr(args, flag, None) or os.environ.get(env) or None
    return key


def _execute(
    args: argparse.Namespace,
    base_url: str,
    credential: str,
    run: Callable[[], Answer],
    render: Render,
) -> int:
    try:
        result = anyio.run(run, backend="asyncio")
    except UsageError as error:  # a malformed URL or key; its message never quotes the key
        return fail(str(error))
    if not isinstance(result, Success):
        return fail(describe_error(result.failure(), base_url=base_url, credential=credential))
    document = result.unwrap()
    if args.as_json:
        print_json(document)
    else:
        render(document)
    return 0


def _admin(
    args: argparse.Namespace,
    call: Callable[[AdminClient], Answer],
    render: Render,
    *,
    needs: Literal["admin", "either"] = "admin",
) -> int:
    """Run one AdminClient call with the command's URL and keys, then print its answer."""
    base_url = _base_url(args)
    admin_key = _key(args, "admin_key", ADMIN_KEY_ENV)
    api_key = _key(args, "api_key", API_KEY_ENV) if needs == "either" else None
    if admin_key is None and api_key is None:
        either = f" (or a tenant's, --api-key or ${API_KEY_ENV})" if needs == "either" else ""
        return fail(f"no admin key: pass --admin-key or set ${ADMIN_KEY_ENV}{either}")

    async def run() -> Result[JsonObject, CyclesError]:
        async with AdminClient(base_url, admin_key=admin_key, api_key=api_key) as client:
            return await call(client)

    credential = "admin key" if admin_key is not None else "API key"
    return _execute(args, base_url, credential, run, render)


def _json(value: AttrsInstance) -> JsonObject:
    return to_wire(value)


def _runtime(
    args: argparse.Namespace,
    call: Callable[[CyclesClient], Awaitable[Result[AttrsInstance, CyclesError]]],
    render: Render,
) -> int:
    """Run one CyclesClient call with the command's URL and API key, then print its answer."""
    base_url = _base_url(args)
    api_key = _key(args, "api_key", API_KEY_ENV)
    if api_key is None:
        return fail(f"no API key: pass --api-key or set ${API_KEY_ENV}")

    async def run() -> Result[JsonObject, CyclesError]:
        config = ClientConfig(base_url=base_url, api_key=api_key)
        async with CyclesClient(config) as client:
            answer = await call(client)
        return answer.map(_json)

    return _execute(args, base_url, "API key", run, render)


def _record(title: str) -> Render:
    return lambda document: print_record(document, title)


def _page(rows_field: str, columns: tuple[tuple[str, str], ...]) -> Render:
    return lambda document: print_page(document, rows_field, columns, rows_field)


# Tenants ------------------------------------------------------------------------------


def _tenant_create(args: argparse.Namespace) -> int:
    request = TenantCreateRequest(
        tenant_id=args.tenant_id, name=args.name, parent_tenant_id=args.parent
    )
    return _admin(args, lambda c: c.create_tenant(request), _record(f"tenant {args.tenant_id}"))


def _tenant_list(args: argparse.Namespace) -> int:
    return _admin(
        args,
        lambda c: c.list_tenants(status=args.status, limit=args.limit, cursor=args.cursor),
        _page("tenants", TENANT_COLUMNS),
    )


def _tenant_show(args: argparse.Namespace) -> int:
    return _admin(args, lambda c: c.get_tenant(args.id), _record(f"tenant {args.id}"))


def _tenant_close(args: argparse.Namespace) -> int:
    request = TenantUpdateRequest(status=TenantStatus.CLOSED)
    return _admin(args, lambda c: c.update_tenant(args.id, request), _record(f"tenant {args.id}"))


def _add_tenant(commands: Commands) -> None:
    actions = _actions(commands, "tenant", "create, list, show or close tenants")
    create = _leaf(actions, "create", "create a tenant", "admin")
    create.add_argument("--id", dest="tenant_id", required=True, help="lower-case id, e.g. acme")
    create.add_argument("--name", required=True, help="display name")
    create.add_argument("--parent", help="parent tenant id")
    create.set_defaults(handler=_tenant_create)
    listing = _leaf(actions, "list", "list tenants, newest first", "admin")
    listing.add_argument("--status", choices=_choices(TenantStatus))
    _add_page_flags(listing)
    listing.set_defaults(handler=_tenant_list)
    show = _leaf(actions, "show", "show one tenant", "admin")
    show.add_argument("id", help="tenant id")
    show.set_defaults(handler=_tenant_show)
    close = _leaf(
        actions, "close", "close a tenant for good: release its holds, revoke its keys", "admin"
    )
    close.add_argument("id", help="tenant id")
    close.set_defaults(handler=_tenant_close)


# API keys -----------------------------------------------------------------------------


def _show_new_key(document: JsonObject) -> None:
    print_record(document, f"API key {document.get('key_id', '')}")
    print_note("key_secret is shown only this once: store it now.")


def _key_create(args: argparse.Namespace) -> int:
    permissions = tuple(args.permission) if args.permission else None
    request = ApiKeyCreateRequest(tenant_id=args.tenant, name=args.name, permissions=permissions)
    return _admin(args, lambda c: c.create_api_key(request), _show_new_key)


def _key_list(args: argparse.Namespace) -> int:
    return _admin(
        args,
        lambda c: c.list_api_keys(
            tenant_id=args.tenant, status=args.status, limit=args.limit, cursor=args.cursor
        ),
        _page("keys", KEY_COLUMNS),
    )


def _key_revoke(args: argparse.Namespace) -> int:
    return _admin(
        args,
        lambda c: c.revoke_api_key(args.key_id, reason=args.reason),
        _record(f"API key {args.key_id}"),
    )


def _add_key(commands: Commands) -> None:
    actions = _actions(commands, "key", "create, list or revoke API keys")
    create = _leaf(actions, "create", "create an API key and print its secret once", "admin")
    create.add_argument("--tenant", required=True, help="the tenant the key acts for")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument(
        "--permission",
        action="append",
        metavar="PERMISSION",
        help="grant this permission (repeat; default: every runtime permission)",
    )
    create.set_defaults(handler=_key_create)
    listing = _leaf(actions, "list", "list API keys (never their secrets)", "admin")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--status", choices=("ACTIVE", "REVOKED", "EXPIRED"))
    _add_page_flags(listing)
    listing.set_defaults(handler=_key_list)
    revoke = _leaf(actions, "revoke", "revoke an API key at once", "admin")
    revoke.add_argument("key_id", help="key id (key_...)")
    revoke.add_argument("--reason", help="why, kept with the key")
    revoke.set_defaults(handler=_key_revoke)


# Budgets ------------------------------------------------------------------------------


def _budget_create(args: argparse.Namespace) -> int:
    unit = Unit(args.unit)
    request = BudgetCreateRequest(
        scope=args.scope,
        unit=unit,
        allocated=Amount(unit, args.allocated),
        tenant_id=args.tenant,
        overdraft_limit=None
        if args.overdraft_limit is None
        else Amount(unit, args.overdraft_limit),
        commit_overage_policy=None
        if args.overage_policy is None
        else OveragePolicy(args.overage_policy),
    )
    return _admin(
        args, lambda c: c.create_budget(request), _record(f"budget {args.scope}"), needs="either"
    )


def _budget_list(args: argparse.Namespace) -> int:
    return _admin(
        args,
        lambda c: c.list_budgets(
            tenant_id=args.tenant,
            scope_prefix=args.scope_prefix,
            unit=None if args.unit is None else Unit(args.unit),
            status=args.status,
            limit=args.limit,
            cursor=args.cursor,
        ),
        _page("ledgers", BUDGET_COLUMNS),
        needs="either",
    )


def _budget_show(args: argparse.Namespace) -> int:
    return _admin(
        args,
        lambda c: c.lookup_budget(args.scope, Unit(args.unit)),
        _record(f"budget {args.scope}"),
        needs="either",
    )


def _budget_fund(args: argparse.Namespace) -> int:
    unit = Unit(args.unit)
    request = BudgetFundingRequest(
        operation=FundingOperation(args.operation),
        amount=Amount(unit, args.amount),
        spent=None if args.spent is None else Amount(unit, args.spent),
        reason=args.reason,
    )

    def render(document: JsonObject) -> None:
        title = f"{args.operation} {args.scope} ({args.unit})"
        print_changes(document, ("allocated", "remaining", "spent", "debt"), title)

    return _admin(
        args,
        lambda c: c.fund_budget(args.scope, unit, request, tenant_id=args.tenant),
        render,
        needs="either",
    )


def _budget_transition(args: argparse.Namespace) -> int:
    request = BudgetStatusTransitionRequest(reason=args.reason)
    unit = Unit(args.unit)
    return _admin(
        args,
        lambda c: (c.freeze_budget if args.freeze else c.unfreeze_budget)(
            args.scope, unit, request
        ),
        _record(f"budget {args.scope}"),
    )


def _add_budget(commands: Commands) -> None:
    actions = _actions(commands, "budget", "create, list, show, fund, freeze or unfreeze budgets")
    create = _leaf(actions, "create", "open a budget for a scope and unit", "either")
    _add_budget_address(create)
    create.add_argument("--allocated", type=_whole, required=True, help="amount in the unit")
    create.add_argument("--overdraft-limit", type=_whole, help="debt allowed (default 0)")
    create.add_argument("--overage-policy", choices=_choices(OveragePolicy))
    create.add_argument("--tenant", help="owning tenant (default: the scope's, with the admin key)")
    create.set_defaults(handler=_budget_create)
    listing = _leaf(actions, "list", "list budgets by scope", "either")
    listing.add_argument("--tenant", help="only this tenant's (admin key)")
    listing.add_argument("--scope-prefix", help="only scopes starting with this")
    listing.add_argument("--unit", choices=_choices(Unit))
    listing.add_argument("--status", choices=("ACTIVE", "FROZEN", "CLOSED"))
    _add_page_flags(listing)
    listing.set_defaults(handler=_budget_list)
    show = _leaf(actions, "show", "show the budget of one scope and unit", "either")
    _add_budget_address(show)
    show.set_defaults(handler=_budget_show)
    fund = _leaf(actions, "fund", "credit, debit, reset or repay a budget", "either")
    _add_budget_address(fund)
    fund.add_argument("--operation", required=True, choices=_choices(FundingOperation))
    fund.add_argument("--amount", type=_whole, required=True, help="amount in the unit")
    fund.add_argument("--spent", type=_whole, help="new spent (RESET_SPENT only)")
    fund.add_argument("--reason", help="why")
    fund.add_argument("--tenant", help="owning tenant (default: the scope's)")
    fund.set_defaults(handler=_budget_fund)
    for name, freeze, text in (
        ("freeze", True, "freeze a budget: new reservations are refused"),
        ("unfreeze", False, "unfreeze a frozen budget"),
    ):
        parser = _leaf(actions, name, text, "admin")
        _add_budget_address(parser)
        parser.add_argument("--reason", help="why")
        parser.set_defaults(handler=_budget_transition, freeze=freeze)


# Policies -----------------------------------------------------------------------------


def _policy_create(args: argparse.Namespace) -> int:
    caps = Caps(
        max_tokens=args.max_tokens,
        max_steps_remaining=args.max_steps,
        tool_allowlist=tuple(args.allow_tool) if args.allow_tool else None,
        tool_denylist=tuple(args.deny_tool) if args.deny_tool else None,
        cooldown_ms=args.cooldown_ms,
    )
    request = PolicyCreateRequest(
        name=args.name,
        scope_pattern=args.scope_pattern,
        tenant_id=args.tenant,
        priority=args.priority,
        caps=None if caps == Caps() else caps,
        commit_overage_policy=None
        if args.overage_policy is None
        else OveragePolicy(args.overage_policy),
    )
    return _admin(
        args, lambda c: c.create_policy(request), _record(f"policy {args.name}"), needs="either"
    )


def _policy_list(args: argparse.Namespace) -> int:
    return _admin(
        args,
        lambda c: c.list_policies(
            tenant_id=args.tenant,
            scope_pattern=args.scope_pattern,
            status=args.status,
            limit=args.limit,
            cursor=args.cursor,
        ),
        _page("policies", POLICY_COLUMNS),
        needs="either",
    )


def _add_policy(commands: Commands) -> None:
    actions = _actions(commands, "policy", "create or list policies")
    create = _leaf(actions, "create", "add a policy for the scopes a pattern matches", "either")
    create.add_argument("--name", required=True, help="unique within the tenant")
    create.add_argument(
        "--scope-pattern", required=True, help="e.g. tenant:acme/agent:* (* is any one segment)"
    )
    create.add_argument("--tenant", help="owning tenant (default: the pattern's, admin key)")
    create.add_argument("--priority", type=_whole, help="higher wins (default 0)")
    create.add_argument("--max-tokens", type=_whole, help="cap: most tokens per call")
    create.add_argument("--max-steps", type=_whole, help="cap: most agent steps remaining")
    create.add_argument("--allow-tool", action="append", metavar="TOOL", help="cap (repeat)")
    create.add_argument("--deny-tool", action="append", metavar="TOOL", help="cap (repeat)")
    create.add_argument("--cooldown-ms", type=_whole, help="cap: wait between calls")
    create.add_argument("--overage-policy", choices=_choices(OveragePolicy))
    create.set_defaults(handler=_policy_create)
    listing = _leaf(actions, "list", "list a tenant's policies", "either")
    listing.add_argument("--tenant", help="the tenant (required with the admin key)")
    listing.add_argument("--scope-pattern", help="only this exact pattern")
    listing.add_argument("--status", choices=("ACTIVE", "DISABLED"))
    _add_page_flags(listing)
    listing.set_defaults(handler=_policy_list)


# Runtime plane ------------------------------------------------------------------------


def _subject(args: argparse.Namespace) -> Subject | None:
    subject = Subject(**{level: getattr(args, level) for level in SUBJECT_FLAGS})
    return subject if subject.levels() else None


def _balances(args: argparse.Namespace) -> int:
    return _runtime(
        args,
        lambda c: c.get_balances(
            subject=_subject(args),
            include_children=args.include_children or None,
            limit=args.limit,
            cursor=args.cursor,
        ),
        _page("balances", BALANCE_COLUMNS),
    )


def _add_balances(commands: Commands) -> None:
    parser = _leaf(commands, "balances", "show the balances of budgeted scopes", "api")
    _add_subject_flags(parser)
    parser.add_argument(
        "--include-children", action="store_true", help="also the scopes below the filter"
    )
    _add_page_flags(parser)
    parser.set_defaults(handler=_balances)


def _reservation_list(args: argparse.Namespace) -> int:
    return _runtime(
        args,
        lambda c: c.list_reservations(
            subject=_subject(args),
            status=None if args.status is None else ReservationStatus(args.status),
            limit=args.limit,
            cursor=args.cursor,
        ),
        _page("reservations", RESERVATION_COLUMNS),
    )


def _reservation_show(args: argparse.Namespace) -> int:
    return _runtime(args, lambda c: c.get_reservation(args.id), _record(f"reservation {args.id}"))


def _show_release(document: JsonObject) -> None:
    print_record({k: v for k, v in document.items() if k != "balances"}, "released")
    balances = document.get("balances")
    if isinstance(balances, list) and balances:
        print_rows(balances, BALANCE_COLUMNS, "balances")


def _reservation_release(args: argparse.Namespace) -> int:
    return _runtime(
        args, lambda c: c.release_reservation(args.id, reason=args.reason), _show_release
    )


def _add_reservations(commands: Commands) -> None:
    actions = _actions(commands, "reservations", "list, show or release reservations")
    listing = _leaf(actions, "list", "list the tenant's reservations", "api")
    _add_subject_flags(listing)
    listing.add_argument("--status", choices=_choices(ReservationStatus))
    _add_page_flags(listing)
    listing.set_defaults(handler=_reservation_list)
    show = _leaf(actions, "show", "show one reservation", "api")
    show.add_argument("id", help="reservation id")
    show.set_defaults(handler=_reservation_show)
    release = _leaf(actions, "release", "release a reservation: return its whole hold", "api")
    release.add_argument("id", help="reservation id")
    release.add_argument("--reason", help="why")
    release.set_defaults(handler=_reservation_release)


def add_admin_commands(commands: Commands) -> None:
    """Register ``tenant``, ``key``, ``budget``, ``policy``, ``balances`` and ``reservations``."""
    _add_tenant(commands)
    _add_key(commands)
    _add_budget(commands)
    _add_policy(commands)
    _add_balances(commands)
    _add_reservations(commands)
