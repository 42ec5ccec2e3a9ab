"""The attribute catalogue: events posted to the real receiver, processed by a real RQ worker,
read back through GET /admin/fields and `hana-rules fields`."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import redis

from engine.config import Settings
from engine.runtime import fields
from engine.runtime.events import EventStore
from engine.runtime.intake import Intake
from engine.runtime.journal import Journal
from engine.runtime.retention import Retention
from engine.runtime.worker import build_worker
from tests.conftest import SHOP_A, SHOP_B
from tests.helpers import let_redis_time_pass, sample, wait_for

RULES = """
rules:
  - id: vip
    on: lead.updated
    when: {field: lead.cf_string_phan_loai_kh, equals: VIP}
"""


def lead(lead_id: str = "L1", **attributes: Any) -> dict[str, Any]:
    """A Hana body with each attribute in Hana's envelope."""
    wrapped = {name: {"nomalizeData": value, "rawData": value} for name, value in {"id": lead_id, **attributes}.items()}
    return {"application": {"id": SHOP_A}, "lead": wrapped}


def by_name(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{row['entity']}.{row['name']}": row for row in listing["fields"]}


def test_the_worker_records_each_attribute_with_its_type_count_and_examples(deploy) -> None:  # noqa: ANN001
    app = deploy(RULES)
    body = sample()
    body["lead"].update({
        "cf_string_phan_loai_kh": {"nomalizeData": "VIP", "rawData": "VIP"},
        "cf_enum_chau_luc": {"nomalizeData": ["Asia"], "rawData": ["Asia"]},
        "cf_date_hen": {"nomalizeData": "10-03-2026", "rawData": "2026-03-09T17:00:00.000Z"},
        "cf_number_diem": {"nomalizeData": None, "rawData": None},
        "daXacNhan": True, "diaChi": {"tinh": "Hà Nội"}, "ghiChu": "x" * 100, "ngayGoi": "2026-03-09T17:00:00.000Z",
    })  # fmt: skip
    body["opportunity"] = {"id": {"nomalizeData": "O1", "rawData": "O1"}, "cf_number_gia": 12}
    app.post("lead.created", body)
    app.post("lead.updated", lead(baseName="Toan T.", cf_string_phan_loai_kh="VIP"))
    app.run_burst()

    answer = app.admin("GET", "/admin/fields")
    assert answer.status_code == 200
    seen = by_name(answer.json())
    expected_types = {
        "lead.id": "string", "lead.baseName": "string", "lead.baseBirthday": "date", "lead.baseSourceInput": "list",
        "lead.baseEmail": "string", "lead.basePhonenumber": "string", "lead.cf_number_kieu_so": "number",
        "lead.cf_string_phan_loai_kh": "string", "lead.cf_enum_chau_luc": "enum", "lead.cf_date_hen": "date",
        "lead.cf_number_diem": "number", "lead.daXacNhan": "boolean", "lead.diaChi": "object",
        "lead.ghiChu": "string", "lead.ngayGoi": "date",
        "opportunity.id": "string", "opportunity.cf_number_gia": "number",
    }  # fmt: skip
    assert {name: row["type"] for name, row in seen.items()} == expected_types
    rows = answer.json()["fields"]
    assert [(r["entity"], r["name"]) for r in rows] == sorted((r["entity"], r["name"]) for r in rows)
    assert {r["application"] for r in rows} == {SHOP_A}
    assert seen["lead.baseName"]["count"] == 2 and seen["lead.baseName"]["examples"] == ["Toan T.", "Toan Truyen"]
    assert seen["lead.baseEmail"]["count"] == 1  # carried by one event; the merged state does not count
    assert seen["lead.cf_string_phan_loai_kh"]["examples"] == ["VIP"]  # distinct
    assert seen["lead.baseSourceInput"]["examples"] == ['["Youtube","Sendo"]']
    assert seen["lead.diaChi"]["examples"] == ['{"tinh":"Hà Nội"}']
    assert seen["lead.cf_number_diem"]["examples"] == []  # null: seen, but nothing to show
    assert seen["lead.ghiChu"]["examples"] == ["x" * 39 + "…"]
    assert seen["lead.baseName"]["last_seen"].endswith("Z")

    only = app.admin("GET", "/admin/fields", params={"entity": "ticket", "application": SHOP_A}).json()
    assert [r["name"] for r in only["fields"]] == ["cf_number_gia", "id"]
    assert app.admin("GET", "/admin/fields", params={"application": SHOP_B}).json()["fields"] == []


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("cf_string_x", 1, "string"), ("cf_number_x", "many", "number"), ("cf_enum_x", None, "enum"),
    ("cf_date_x", "soon", "date"), ("cf_stringx", 5, "number"), ("x", True, "boolean"), ("x", 1.5, "number"),
    ("x", [1], "list"), ("x", {"a": 1}, "object"), ("x", None, ""), ("baseBirthday", "14-09-2020", "date"),
    ("x", "2020-09-13T17:00:00.000Z", "date"), ("x", "0978712200", "string"), ("baseSourceInput", "a,b", "list"),
])  # fmt: skip
def test_a_type_comes_from_the_prefix_else_from_the_value(name: str, value: Any, expected: str) -> None:
    assert fields.type_of(name, value) == expected


def test_examples_are_the_three_latest_distinct_values_cut_to_40_characters(deploy) -> None:  # noqa: ANN001
    app = deploy(RULES)
    long = "Khách hàng rất quan tâm đến gói cao cấp, gọi lại sau 3 giờ chiều"
    for value in ("A", "B", "A", "C", long, "C"):
        app.post("lead.updated", lead(cf_string_ghi_chu=value))
    app.run_burst()
    row = by_name(app.admin("GET", "/admin/fields").json())["lead.cf_string_ghi_chu"]
    assert row["count"] == 6
    assert row["examples"] == ["C", long[:39] + "…", "A"]
    assert all(len(example) <= 40 for example in row["examples"])


def test_values_are_masked_like_the_rest_of_the_admin_api(deploy) -> None:  # noqa: ANN001
    app = deploy(RULES)
    token = app.settings.admin_token
    app.post("lead.updated", lead(baseName=f"{'n' * 35} {token}", access_token="abc"))
    app.run_burst()
    answer = app.admin("GET", "/admin/fields")
    assert token not in answer.text and token[:8] not in answer.text  # masked whole, before the cut
    seen = by_name(answer.json())
    assert seen["lead.baseName"]["examples"] == [f"{'n' * 35} ***"]
    assert seen["lead.access_token"]["examples"] == ["***"]


def test_the_endpoint_refuses_a_bad_entity_and_a_missing_token(deploy) -> None:  # noqa: ANN001
    app = deploy(RULES)
    answer = app.admin("GET", "/admin/fields", params={"entity": "customer"})
    assert answer.status_code == 400
    assert "lead or opportunity" in answer.json()["error"]
    import requests

    assert requests.get(f"{app.url}/admin/fields", timeout=10).status_code == 401
    assert app.admin("GET", "/admin/fields").json() == {"fields": [], "dropped": []}


def accept(settings: Settings, client: redis.Redis, body: dict[str, Any], application: int = 0) -> str:
    intake = Intake(settings, EventStore(client), Journal(settings.data_dir))
    return intake.receive("lead.updated", json.dumps(body).encode(), settings.applications[application]).event_id


def test_a_catalogue_is_bounded_per_application_and_counts_what_it_drops(
    settings: Settings, redis_client: redis.Redis
) -> None:
    accept(settings, redis_client, lead("L1", **{f"cf_string_a{i:03d}": i for i in range(300)}))
    accept(settings, redis_client, lead("L2", **{f"cf_string_b{i:03d}": i for i in range(300)}))
    accept(settings, redis_client, lead("L3", cf_string_a000="again", cf_string_new="too late"))
    body = lead("L4", cf_string_b299="other shop")
    body["application"]["id"] = SHOP_B
    accept(settings, redis_client, body, application=1)
    build_worker(settings, redis_client).work(burst=True)

    catalogue = fields.Catalogue(redis_client)
    shop_a = catalogue.listing(application=SHOP_A)
    names = {row["name"] for row in shop_a["fields"]}
    assert len(names) == fields.MAX_ATTRIBUTES
    # Both events carried `id`: the first event's 301 names, then 199 of the second's, in its order.
    assert "cf_string_b198" in names and "cf_string_b199" not in names and "cf_string_new" not in names
    assert by_name(shop_a)["lead.cf_string_a000"]["examples"] == ["again", "0"]  # a known name still updates
    assert shop_a["dropped"] == [{"application": SHOP_A, "entity": "lead", "count": 102}]
    shop_b = catalogue.listing(application=SHOP_B)  # another application has a catalogue of its own
    assert {row["name"] for row in shop_b["fields"]} == {"id", "cf_string_b299"}
    assert shop_b["dropped"] == []


def test_retention_forgets_the_names_not_seen_within_it(settings: Settings, redis_client: redis.Redis) -> None:
    settings = replace(settings, retention=2.0)  # a burst worker takes about a second after its commit
    accept(settings, redis_client, lead("L1", cf_string_old="x", cf_string_kept="y"))
    build_worker(settings, redis_client).work(burst=True)
    let_redis_time_pass(redis_client, 2.1)
    accept(settings, redis_client, lead("L2", cf_string_kept="z"))
    build_worker(settings, redis_client).work(burst=True)

    Retention(redis_client, retention=settings.retention).trim(max_events=settings.max_events)
    kept = by_name(fields.Catalogue(redis_client).listing())
    assert set(kept) == {"lead.id", "lead.cf_string_kept"}
    assert kept["lead.cf_string_kept"]["examples"][0] == "z"

    let_redis_time_pass(redis_client, 2.1)
    Retention(redis_client, retention=settings.retention).trim(max_events=settings.max_events)
    assert fields.Catalogue(redis_client).listing() == {"fields": [], "dropped": []}
    assert not redis_client.keys("hr:fields:*")  # an emptied catalogue leaves nothing behind


def test_the_cli_prints_a_table_or_the_json(deploy) -> None:  # noqa: ANN001
    """Through a real `hana-rules` process, as the other CLI tests (in-process, its logging would stay on)."""
    app = deploy(RULES)
    app.post("lead.created", sample())
    app.run_burst()

    table = app.cli("fields")
    assert table.returncode == 0, table.stderr
    assert f"lead attributes of application {SHOP_A} (7)" in table.stdout
    line = next(line for line in table.stdout.splitlines() if "baseSourceInput" in line)
    assert line.split()[1:3] == ["list", "1"] and line.endswith('["Youtube","Sendo"]')

    as_json = app.cli("fields", "--entity", "lead", "--application", SHOP_A, "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert len(json.loads(as_json.stdout)["fields"]) == 7

    wrong = app.cli("fields", "--entity", "customer")
    assert wrong.returncode == 2 and "customer" in wrong.stderr
    empty = app.cli("fields", "--application", SHOP_B)
    assert "No attributes seen yet" in empty.stdout


def test_a_busy_worker_gathers_what_events_carried_and_writes_it_in_one_call(redis_client: redis.Redis) -> None:
    """While other events wait, observations are merged in memory and ride along a commit each second."""
    pending = fields.Pending(redis_client)
    catalogue = fields.Catalogue(redis_client)

    def carried(value: str) -> tuple[fields.CatalogueWrite, ...]:
        return fields.catalogue_writes({"application": {"id": SHOP_A}, "lead": {"id": "L1", "x": value}}, frozenset())

    for value in ("a", "b"):
        assert pending.offer(carried(value), idle=False) == []  # gathered: nothing written yet
        pending.committed()
    assert pending.offer(carried("lost"), idle=False) == []  # its commit failed: it is processed again
    assert catalogue.listing()["fields"] == []

    arguments = wait_for(lambda: pending.offer(carried("c"), idle=False), what="a second to pass")
    pending.script(keys=[], args=arguments)  # what the commit's pipeline does
    seen = by_name(catalogue.listing())
    assert seen["lead.x"]["count"] == 3 and seen["lead.x"]["examples"] == ["c", "b", "a"]
    assert seen["lead.id"]["count"] == 3

    assert pending.offer(carried("d"), idle=False) == []
    pending.committed()
    pending.flush()  # the worker's maintenance, and its way out
    assert by_name(catalogue.listing())["lead.x"]["examples"] == ["d", "c", "b"]
    assert pending.offer(carried("e"), idle=True)  # nothing else waits: written with this commit
