"""Data files, templates, weights, journeys and think time as build_spec checks them: every
problem a user can cause is one line (exit 2 from the CLI), naming file, line and column."""
import csv
import json
import uuid

import pytest
from conftest import cli

from loadtester.run.runner import build_origins
from loadtester.feed import fill_template
from loadtester.spec import (
    SpecError,
    Target,
    build_spec,
    parse_think,
    parse_url,
    read_headers_file,
    weighted_turns,
)

URL = "http://127.0.0.1:9/"


def rows_file(tmp_path, text, name="rows.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def first_request(spec, target=0):
    return spec.variants.requests[target][0].decode()


def test_values_are_percent_encoded_in_urls_checked_in_headers_and_json_escaped_on_request(
        tmp_path):
    data = rows_file(tmp_path, 'q,name\n"a b&c/d",O"Brien\n')
    spec = build_spec(URL + "s?q={{q}}&p={{q|raw}}", data=data, headers=["X-Name: {{name}}"],
                      method="POST", body='{"name": "{{name|json}}", "raw": "{{name}}"}')
    request = first_request(spec)
    assert request.startswith("POST /s?q=a%20b%26c%2Fd&p=a%20b&c/d HTTP/1.1\r\n")
    assert "\r\nX-Name: O\"Brien\r\n" in request
    body = request.split("\r\n\r\n", 1)[1]
    assert body == '{"name": "O\\"Brien", "raw": "O"Brien"}'
    assert f"Content-Length: {len(body)}\r\n" in request


@pytest.mark.parametrize("template", [
    URL + "a b/{{v}}?q={{v}}&x=é#frag", URL + "{{v}}", "http://127.0.0.1:9?{{v}}",
    URL + "caf%C3%A9/{{v}}/[x]", URL + "p/{{v|raw}}", URL + "{{v|json}}?a",
])
def test_urls_built_once_per_row_equal_a_parse_of_the_filled_in_url(tmp_path, template):
    values = ["plain", "a b&c=d/e?f#g", "é ü", "100%", "~._-", "[]{}|\\^`\"'<>"]
    with open(tmp_path / "rows.csv", "w", newline="") as out:
        csv.writer(out).writerows([["v"], *([v] for v in values)])
    data = str(tmp_path / "rows.csv")
    spec = build_spec(template, data=data, headers=["X-A: b"])
    for value, request in zip(values, spec.variants.requests[0]):
        filled = fill_template(template, lambda name, value=value: value, "url")
        expected = Target(parse_url(filled), "GET", (("X-A", "b"),)).request_bytes()
        assert request == expected, (value, request)


def test_ndjson_rows_built_ins_and_a_repeatable_shuffle(tmp_path):
    data = rows_file(tmp_path, "".join(json.dumps({"id": i, "tags": [i]}) + "\n"
                                       for i in range(50)), name="rows.ndjson")
    spec = build_spec(URL + "{{id}}/{{seq}}/{{uuid}}?t={{tags}}", data=data,
                      data_order="random", seed=3)
    again = build_spec(URL + "{{id}}/{{seq}}/{{uuid}}?t={{tags}}", data=data,
                       data_order="random", seed=3)
    assert spec.variants.requests == again.variants.requests
    assert sorted(spec.variants.row_order) == list(range(50))
    assert list(spec.variants.row_order) != list(range(50))
    line = first_request(spec).split(" ")[1]
    row_id, seq, row_uuid = line.split("?")[0].strip("/").split("/")
    assert int(seq) == int(row_id) + 1 == spec.variants.row_order[0] + 1
    assert uuid.UUID(row_uuid).version == 4
    assert line.endswith("?t=%5B" + row_id + "%5D")
    described = spec.config()["traffic"]["data"]
    assert described["rows"] == 50 and described["order"] == "random" and described["seed"] == 3
    # without --seed one is drawn and stored: giving it back repeats the run
    drawn = build_spec(URL + "{{uuid}}", data=data)
    seed = drawn.config()["traffic"]["data"]["seed"]
    assert seed is not None
    assert build_spec(URL + "{{uuid}}", data=data, seed=seed).variants.requests == \
        drawn.variants.requests


def test_weighted_turns_are_exact_and_spread():
    turns = weighted_turns([70, 25, 5])
    assert len(turns) == 20 and [turns.count(i) for i in range(3)] == [14, 5, 1]
    assert weighted_turns([2, 2]) == [0, 1]
    assert weighted_turns([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]      # spread, not 0 0 0 0 0 1 2
    with pytest.raises(SpecError, match="at most 1,000,000"):
        weighted_turns([999_999, 2])


def test_think_times():
    assert parse_think("200ms") == (0.2, 0.2)
    assert parse_think("100ms-500ms") == (0.1, 0.5)
    for bad, message in (("500ms-100ms", "from low to high"), ("0ms", "more than 0"),
                         ("soon", "use a duration or a range")):
        with pytest.raises(SpecError, match=message):
            parse_think(bad)


def test_engine_groups_rows_and_schedule(tmp_path):
    data = rows_file(tmp_path, "id\n1\n2\n3\n")
    targets = tmp_path / "t.txt"
    targets.write_text(f"GET {URL}a/{{{{id}}}}\nweight: 3\n\nGET {URL}b\nweight: 1\n")
    spec = build_spec(targets_file=str(targets), data=data)
    assert spec.config()["traffic"]["weights"] == [3, 1]
    (origin,) = build_origins(spec)
    assert origin.host == "127.0.0.1"


@pytest.mark.parametrize("make_args, message", [
    (lambda d: dict(url=URL + "{{nope}}", data=d["csv"]),
     r"rows.csv:1: no column 'nope' for \{\{nope\}\} in target 1"),
    (lambda d: dict(url=URL + "{{id}}", data=d["bad_csv"]), r"bad.csv:3: 3 fields, the header has 2"),
    (lambda d: dict(url=URL + "{{id}}", data=d["bad_json"]), r"bad.ndjson:2: not JSON"),
    (lambda d: dict(url=URL + "{{id}}", data=d["missing_key"]),
     r"gap.ndjson:2: no 'id' in this row"),
    (lambda d: dict(url=URL, headers=["X-Token: {{token}}"], data=d["newline"]),
     r"nl.csv:2: column 'token': control characters .* X-Token header"),
    (lambda d: dict(url="http://{{host}}:8080/", data=d["hosts"]),
     r"target 1 \(GET http://\{\{host\}\}:8080/\): a \{\{column\}\} may go in the URL's path and "
     r"query, not in its scheme, host or port"),
    (lambda d: dict(url=URL + "{{id}}", data=d["csv"], data_max_mb=100 / (1 << 20)),
     r"need more than 100 B \(--data-max-mb\)"),
    (lambda d: dict(url=URL + "{{id}}", data=d["csv"], data_max_mb=10 / (1 << 20)),
     r"data file .*rows.csv' is \d+ B, more than --data-max-mb \(10 B\)"),
    (lambda d: dict(url=URL + "{{id}}", data=d["csv"], pipeline=4), r"--pipeline above 1"),
    (lambda d: dict(url=URL + "{{id}}", data=d["csv"], data_per_connection=True, connections=9),
     r"9 connections but 2 rows"),
    (lambda d: dict(url=URL, data_order="random"), r"--data-order needs --data FILE"),
    (lambda d: dict(url=URL + "u/{{id}}"),
     r"target 1 \(GET .*u/\{\{id\}\}\): \{\{id\}\} needs --data FILE"),
    (lambda d: dict(url=URL, headers=["Authorization: Bearer {{token}}"]),
     r"\{\{token\}\} needs --data FILE"),
    (lambda d: dict(targets_file=d["template_target"]), r"target 2 .*\{\{seq\}\} needs --data FILE"),
    (lambda d: dict(url=URL, data=d["csv"]), r"no target uses a \{\{column\}\}"),
    (lambda d: dict(url=URL + "{{id}}", data=str(d["dir"] / "none.csv")),
     r"cannot read data file .*none.csv"),
    (lambda d: dict(url=URL, think="50ms", rate="100"), r"--think is for closed loop"),
    (lambda d: dict(url=URL + "{{id}}", data=d["csv"], body_file=d["binary"]),
     r"target 1 \(GET .*\): its body is not UTF-8 text \(byte 0\)"),
    (lambda d: dict(journey=d["journey"], url=URL), r"either --journey FILE or URLs"),
    (lambda d: dict(targets_file=d["two_hosts"]), r"weights need every target on one"),
    (lambda d: dict(journey=d["weighted_journey"]), r"'weight:' has no place"),
    (lambda d: dict(targets_file=d["bad_weight"]), r"t3.txt:2: invalid weight '0'"),
])
def test_every_bad_input_is_one_line(tmp_path, make_args, message):
    files = {
        "dir": tmp_path,
        "csv": rows_file(tmp_path, "id,name\n1,a\n2,b\n"),
        "bad_csv": rows_file(tmp_path, "id,name\n1,a\n2,b,c\n", "bad.csv"),
        "bad_json": rows_file(tmp_path, '{"id": 1}\n{"id": \n', "bad.ndjson"),
        "missing_key": rows_file(tmp_path, '{"id": 1}\n{"other": 2}\n', "gap.ndjson"),
        "newline": rows_file(tmp_path, 'token\n"a\nb"\n', "nl.csv"),
        "hosts": rows_file(tmp_path, "host\nexample.com\n", "hosts.csv"),
        "journey": rows_file(tmp_path, f"GET {URL}a\n\nGET {URL}b\n", "j.txt"),
        "weighted_journey": rows_file(tmp_path, f"GET {URL}a\nweight: 2\n", "j2.txt"),
        "two_hosts": rows_file(tmp_path, f"GET {URL}a\nweight: 2\n\nGET http://127.0.0.2:9/\n",
                               "t2.txt"),
        "bad_weight": rows_file(tmp_path, f"GET {URL}a\nweight: 0\n", "t3.txt"),
        "template_target": rows_file(tmp_path, f"GET {URL}a\n\nGET {URL}b?n={{{{seq}}}}\n", "t4.txt"),
        "binary": str(tmp_path / "body.bin"),
    }
    (tmp_path / "body.bin").write_bytes(b"\xff{{id}}")
    with pytest.raises(SpecError, match=message) as raised:
        build_spec(**make_args(files))
    assert "\n" not in str(raised.value)


def test_the_cli_says_it_in_one_line_with_exit_2(tmp_path):
    data = rows_file(tmp_path, "id\n1\n")
    result = cli("blast", URL + "{{user}}", "--data", data, "-n", "1")
    assert result.returncode == 2
    assert f"{data}:1: no column 'user'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("where", "template"), [
    ("url", "{{id|bogus}}"), ("url", "{{ id | JSON }}"), ("header", "{{}}"), ("body", "{{id|}}")])
def test_a_misspelt_template_is_refused_not_sent_as_it_is(tmp_path, where, template):
    # Before: '{{id|bogus}}' beside a good '{{id}}' went out literally (%7B%7Bid%7Cbogus%7D%7D),
    # and alone it was "no target uses a {{column}}".
    data = rows_file(tmp_path, "id\n1\n")
    for url in (URL + "u/{{id}}", URL + "u"):
        with pytest.raises(SpecError, match=r"is not a template: use \{\{column\}\}") as info:
            build_spec(url + (f"?x={template}" if where == "url" else ""), data=data,
                       headers=[f"X-T: {template}"] if where == "header" else [],
                       method="POST", body=template if where == "body" else None)
        assert repr(template) in str(info.value)
    # what is no template at all is still sent as it is
    spec = build_spec(URL + "u/{{id}}", data=data, method="POST", body="{{#each x}}{{> p}}")
    assert first_request(spec).endswith("{{#each x}}{{> p}}")


def test_without_data_a_body_is_sent_as_given_templates_and_all():
    # a URL or header '{{name}}' without --data is refused (above); a body may be a template
    # language's own text, and with no --data nothing claims it
    spec = build_spec(URL, method="POST", body='{"page": "{{title}}"}')
    assert spec.variants is None
    assert spec.targets[0].request_bytes().endswith(b'{"page": "{{title}}"}')


def test_think_time_with_pipelining_is_refused():
    # Before: `--think 100ms --pipeline 4 -n 16 -c 1` sent 7 requests, reported
    # "7 completed ... [count]" and exit 0.
    with pytest.raises(SpecError, match="--think cannot be combined with --pipeline above 1"):
        build_spec(URL, think="100ms", pipeline=4, requests=16, connections=1)
    assert build_spec(URL, think="100ms", pipeline=1, requests=16).think_s == (0.1, 0.1)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), 2e6, float("inf")])
def test_data_max_mb_out_of_range_says_the_range(tmp_path, value):
    # Before: 2000000 said "invalid --data-max-mb 2e+06: more than 0".
    data = rows_file(tmp_path, "id\n1\n")
    with pytest.raises(SpecError, match=r"more than 0, at most 1,048,576"):
        build_spec(URL + "{{id}}", data=data, data_max_mb=value)


def test_a_broken_ipv6_url_in_a_targets_file_names_the_file_line_and_url(tmp_path):
    # Before: "loadtester: error: Invalid IPv6 URL", naming neither the file nor the URL.
    targets = tmp_path / "t.txt"
    targets.write_text(f"GET {URL}\n\nGET http://[::1/x\n")
    with pytest.raises(SpecError, match=r"t\.txt:3: invalid URL 'http://\[::1/x': Invalid IPv6"):
        build_spec(targets_file=str(targets))


def test_targets_and_headers_files_saved_with_a_bom_are_read(tmp_path):
    # Before: a file saved by Windows Notepad (UTF-8 with BOM) was refused: "expected 'METHOD
    # URL', got '\ufeffGET ...'", and its first header was "not a token".
    targets = tmp_path / "t.txt"
    targets.write_bytes(b"\xef\xbb\xbfGET " + URL.encode() + b"a\r\n")
    headers = tmp_path / "h.txt"
    headers.write_bytes(b"\xef\xbb\xbfX-A: 1\r\n")
    spec = build_spec(targets_file=str(targets), headers_file=str(headers))
    assert spec.url.path == "/a"
    assert read_headers_file(str(headers)) == [("X-A", "1")]
