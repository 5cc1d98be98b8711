"""The architecture's rules as code.

- The import contracts (``[tool.importlinter]`` in pyproject.toml, run by ``make lint``): the untouched
  tree keeps them, and each one breaks on a deliberate breach planted in a copy of the packages.
- Every view, admin and middleware module is covered by the "no cryptography" contract.
- Only :mod:`enroll.flows` writes an enrollment request's status: an ``ast`` scan of the product code.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.db import models

from enroll.models import EnrollmentRequest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("enroll", "accounts", "ca")


def _product_files() -> Iterator[tuple[str, Path]]:
    """(dotted module name, path) of every module of the product code; migrations are generated code."""
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


# --- Import contracts ------------------------------------------------------------------------------------


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """This virtualenv's ``lint-imports`` with the project's contracts, on the packages found in ``tree``."""
    program = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert program is not None, "lint-imports is missing from the virtualenv (pip install -e '.[dev]')"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["COLUMNS"] = "400"  # one contract a line
    return subprocess.run(
        [program, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def packages_copy(tmp_path: Path) -> Path:
    """A copy of the product packages to plant breaches in (lint-imports looks in the current directory)."""
    for package in PRODUCT_PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_untouched_packages_keep_every_import_contract(packages_copy: Path) -> None:
    result = _lint_imports(packages_copy)
    output = " ".join(result.stdout.split())
    assert result.returncode == 0, result.stdout + result.stderr
    for contract in _contracts().values():
        assert f"{contract['name']} KEPT" in output


@pytest.mark.parametrize(
    ("module", "code", "broken_ids"),
    [
        pytest.param(
            "ca/pki/settings_reader.py",
            "from django.conf import settings\n",
            {"pki-no-django"},
            id="pki-importing-django-breaks-pki-no-django",
        ),
        pytest.param(
            "ca/pki/stored.py",
            "from ca.models import Certificate\n",
            {"pki-bottom", "pki-no-django"},  # ca.models imports django
            id="pki-importing-ca-models-breaks-pki-bottom",
        ),
        pytest.param(
            "ca/pki/flowing.py",
            "from enroll import flows\n",
            {"pki-bottom", "apps-layers", "pki-no-django"},
            id="pki-importing-enroll-breaks-pki-bottom-and-the-app-layers",
        ),
        pytest.param(
            "ca/portal_hook.py",
            "from enroll import flows\n",
            {"apps-layers"},
            id="ca-importing-enroll-breaks-the-app-layers",
        ),
        pytest.param(
            "ca/user_profiles.py",
            "from accounts.models import Profile\n",
            {"apps-layers"},
            id="ca-importing-accounts-breaks-the-app-layers",
        ),
        pytest.param(
            "accounts/requests_page.py",
            "def page() -> None:\n    from enroll import views\n",
            {"apps-layers"},
            id="accounts-importing-enroll-inside-a-function-breaks-the-app-layers",
        ),
        pytest.param(
            "enroll/views.py",
            "from cryptography import x509\n",
            {"views-no-cryptography"},
            id="portal-view-importing-cryptography-breaks-views-no-cryptography",
        ),
        pytest.param(
            "ca/admin_views.py",
            "from cryptography.hazmat.primitives import serialization\n",
            {"views-no-cryptography"},
            id="ca-admin-view-importing-cryptography-breaks-views-no-cryptography",
        ),
        pytest.param(
            "accounts/admin.py",
            "from cryptography import x509\n",
            {"views-no-cryptography"},
            id="admin-importing-cryptography-breaks-views-no-cryptography",
        ),
    ],
)
def test_a_planted_breach_breaks_its_import_contracts(
    packages_copy: Path, module: str, code: str, broken_ids: set[str]
) -> None:
    path = packages_copy / module
    existing = path.read_text() if path.exists() else "from __future__ import annotations\n"
    path.write_text(existing + "\n" + code)

    result = _lint_imports(packages_copy)

    output = " ".join(result.stdout.split())
    assert result.returncode != 0, result.stdout + result.stderr
    broken = {id_ for id_, contract in _contracts().items() if f"{contract['name']} BROKEN" in output}
    assert broken == broken_ids, result.stdout


def _covered(module: str, expressions: list[str]) -> bool:
    """Whether an import-linter module expression (``*`` = one name) matches the module or a package of it."""
    parts = module.split(".")
    for expression in expressions:
        pattern = expression.split(".")
        if len(pattern) <= len(parts) and all(
            p in ("*", name) for p, name in zip(pattern, parts, strict=False)
        ):
            return True
    return False


def test_every_view_admin_and_middleware_module_is_under_the_no_cryptography_contract() -> None:
    """A new ``*_views.py`` module must be added to the contract's source_modules (its wildcards take only
    whole names: ``*.views``, not ``*_views``)."""
    sources = _contracts()["views-no-cryptography"]["source_modules"]
    request_handlers = [
        module
        for module, _ in _product_files()
        if any(part.endswith("views") or part in ("admin", "middleware") for part in module.split(".")[1:])
    ]
    assert "enroll.keygen_views" in request_handlers  # the search finds them
    uncovered = [module for module in request_handlers if not _covered(module, sources)]
    assert uncovered == [], f"add to views-no-cryptography's source_modules in pyproject.toml: {uncovered}"


# --- Only enroll.flows writes a request's status ------------------------------------------------------

FLOWS = "enroll.flows"

#: Queryset and manager methods that store the keyword arguments they are given.
_WRITING_METHODS = frozenset({"update", "create", "get_or_create", "update_or_create"})
#: Their keyword arguments that hold a dict of more field values.
_DEFAULTS_KEYWORDS = frozenset({"defaults", "create_defaults"})


@dataclass(frozen=True)
class StatusWrite:
    where: str
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.code}"


def _models_with_a_status_field() -> list[type[models.Model]]:
    return [
        model
        for model in apps.get_models(include_auto_created=True)
        if any(field.name == "status" for field in model._meta.concrete_fields)
    ]


def _status_models() -> frozenset[str]:
    """Class names of the models that have a ``status`` field: EnrollmentRequest (and any proxy of it)."""
    return frozenset(model.__name__ for model in _models_with_a_status_field())


def _is_status_key(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value == "status"


def _dict_has_status(node: ast.expr) -> bool:
    """``{"status": ...}`` or ``dict(status=...)``."""
    if isinstance(node, ast.Dict):
        return any(_is_status_key(key) for key in node.keys)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return any(keyword.arg == "status" for keyword in node.keywords)
    return False


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    if isinstance(node.func, ast.Name):
        return node.func.id
    return None


class _StatusWriteFinder(ast.NodeVisitor):
    """Finds the writes of a request's status in one module.

    Judged by name, since ``ast`` has no types: EnrollmentRequest is the only model with a ``status``
    field (test_only_enrollment_requests_have_a_status_field keeps that true), so

    - ``<anything>.status = ...`` (also augmented, annotated, in a tuple, or ``setattr(x, "status", ...)``)
      is a write, except ``self.status = ...`` inside a class that is not such a model (a dataclass's or
      a form's own attribute);
    - ``.update/.create/.get_or_create/.update_or_create(status=...)``, also as ``**{"status": ...}`` or in
      ``defaults=``, is a write (``{...}.update`` and ``dict(...).update`` are plain dicts and skipped; a
      dict held in a variable cannot be told apart: write ``d["status"] = ...`` there);
    - ``EnrollmentRequest(status=...)`` and ``bulk_update(objs, ["status"])`` are writes.

    Not writes: reading ``.status``, ``filter(status=...)``, ``JsonResponse(..., status=400)``, other
    classes' ``status=`` arguments, ``save(update_fields=["status"])`` (it stores a value assigned before,
    which the assignment already reports).
    """

    def __init__(self, where: str, source: str, status_models: frozenset[str]) -> None:
        self.where = where
        self.lines = source.splitlines()
        self.status_models = status_models
        self.classes: list[str] = []
        self.writes: list[StatusWrite] = []

    def _report(self, node: ast.AST) -> None:
        line = getattr(node, "lineno", 0)
        code = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ast.dump(node)
        self.writes.append(StatusWrite(self.where, line, code))

    def _is_own_attribute(self, owner: ast.expr) -> bool:
        """``self`` in a method of a class that is not a model with a status field."""
        in_other_class = bool(self.classes) and self.classes[-1] not in self.status_models
        return isinstance(owner, ast.Name) and owner.id == "self" and in_other_class

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append(node.name)
        self.generic_visit(node)
        self.classes.pop()

    def _check_target(self, target: ast.expr) -> None:
        if isinstance(target, ast.Attribute) and target.attr == "status":
            if not self._is_own_attribute(target.value):
                self._report(target)
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self._check_target(element)
        elif isinstance(target, ast.Starred):
            self._check_target(target.value)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._check_target(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_target(node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._check_target(node.target)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _call_name(node)
        if self._writes_status(node, name):
            self._report(node)
        self.generic_visit(node)

    def _writes_status(self, node: ast.Call, name: str | None) -> bool:
        status_keyword = any(
            keyword.arg == "status" or (keyword.arg is None and _dict_has_status(keyword.value))
            for keyword in node.keywords
        )
        if name == "setattr" and isinstance(node.func, ast.Name):
            return (
                len(node.args) >= 2
                and _is_status_key(node.args[1])
                and not self._is_own_attribute(node.args[0])
            )
        if name in self.status_models:
            return status_keyword
        if name == "bulk_update":
            fields = node.args[1] if len(node.args) >= 2 else None
            fields = next((kw.value for kw in node.keywords if kw.arg == "fields"), fields)
            return isinstance(fields, ast.List | ast.Tuple | ast.Set) and any(
                _is_status_key(f) for f in fields.elts
            )
        if name in _WRITING_METHODS and isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            if name == "update" and (
                isinstance(receiver, ast.Dict)
                or (
                    isinstance(receiver, ast.Call)
                    and isinstance(receiver.func, ast.Name)
                    and receiver.func.id == "dict"
                )
            ):
                return False
            defaults = any(
                kw.arg in _DEFAULTS_KEYWORDS and _dict_has_status(kw.value) for kw in node.keywords
            )
            return status_keyword or defaults
        return False


def find_status_writes(source: str, where: str, status_models: frozenset[str]) -> list[StatusWrite]:
    finder = _StatusWriteFinder(where, source, status_models)
    finder.visit(ast.parse(source, filename=where))
    return finder.writes


def _is_flows(module: str) -> bool:
    return module == FLOWS or module.startswith(FLOWS + ".")


def test_only_enrollment_requests_have_a_status_field() -> None:
    """The scanner below judges by the name ``status``; another model with such a field would make its
    writes look like a request's. Then teach the scanner to tell them apart (e.g. by the receiver) first.

    A third-party model with one (django-tasks-db's ``DBTaskResult``, the mail queue: docs/MAIL.md) is
    written only by its own library, outside the scanned code, as long as no product module names it:
    the moment one does, this fails too."""
    models_with_status = _models_with_a_status_field()
    assert models_with_status, "EnrollmentRequest lost its status field: update this test"
    others = [model for model in models_with_status if not issubclass(model, EnrollmentRequest)]
    assert all(model.__module__.split(".")[0] not in PRODUCT_PACKAGES for model in others), others
    product_code = [path.read_text() for _, path in _product_files()]
    named = [model for model in others if any(model.__name__ in source for source in product_code)]
    assert named == [], f"product code names {named}: teach the scanner to tell its writes apart first"


def test_nothing_outside_the_flows_module_writes_a_request_status() -> None:
    status_models = _status_models()
    writes = [
        write
        for module, path in _product_files()
        if not _is_flows(module)
        for write in find_status_writes(path.read_text(), str(path.relative_to(ROOT)), status_models)
    ]
    assert writes == [], "a request's status changes only in enroll.flows:\n" + "\n".join(map(str, writes))


def test_the_scanner_finds_the_status_writes_of_the_flows_module() -> None:
    """Not vacuous: the same scan finds the writes where they belong."""
    status_models = _status_models()
    writes = [
        write
        for module, path in _product_files()
        if _is_flows(module)
        for write in find_status_writes(path.read_text(), str(path.relative_to(ROOT)), status_models)
    ]
    assert any("RequestStatus.APPROVED" in write.code for write in writes), writes
    assert any("RequestStatus.REJECTED" in write.code for write in writes), writes


@pytest.mark.parametrize(
    "snippet",
    [
        pytest.param("request.status = RequestStatus.APPROVED", id="attribute-assignment"),
        pytest.param("request.status: str = 'approved'", id="annotated-assignment"),
        pytest.param("request.status += ''", id="augmented-assignment"),
        pytest.param("request.status, request.reason = 'rejected', 'no'", id="tuple-assignment"),
        pytest.param("setattr(request, 'status', 'issued')", id="setattr"),
        pytest.param(
            "EnrollmentRequest.objects.filter(pk=1).update(status='approved')", id="queryset-update"
        ),
        pytest.param("pending.update(status=RequestStatus.FAILED)", id="update-of-a-queryset-variable"),
        pytest.param(
            "EnrollmentRequest.objects.all().update(**{'status': 'failed'})", id="update-with-unpacked-dict"
        ),
        pytest.param("EnrollmentRequest.objects.create(owner=user, status='issued')", id="create"),
        pytest.param(
            "EnrollmentRequest.objects.update_or_create(pk=1, defaults={'status': 'issued'})",
            id="update-or-create-defaults",
        ),
        pytest.param(
            "user.enrollment_requests.get_or_create(defaults=dict(status='issued'))", id="related-manager"
        ),
        pytest.param("EnrollmentRequest(owner=user, status='issued')", id="constructor"),
        pytest.param("EnrollmentRequest.objects.bulk_update(rows, ['status', 'reason'])", id="bulk-update"),
        pytest.param(
            "class EnrollmentRequest(models.Model):\n"
            "    def approve(self) -> None:\n"
            "        self.status = 'approved'",
            id="the-model-changing-its-own-status",
        ),
    ],
)
def test_the_scanner_reports_a_status_write_outside_the_flows_module(snippet: str) -> None:
    writes = find_status_writes(snippet, "enroll/views.py", _status_models())
    assert len(writes) == 1, writes
    assert writes[0].where == "enroll/views.py"


@pytest.mark.parametrize(
    "snippet",
    [
        pytest.param("if request.status == RequestStatus.ISSUED:\n    pass", id="reading-the-status"),
        pytest.param(
            "EnrollmentRequest.objects.filter(status__in=PENDING_STATUSES)", id="filtering-by-status"
        ),
        pytest.param("EnrollmentRequest.objects.exclude(status='issued').count()", id="excluding-by-status"),
        pytest.param("JsonResponse({'ok': False}, status=400)", id="an-http-status"),
        pytest.param("render(request, 'page.html', {}, status=429)", id="a-rendered-http-status"),
        pytest.param(
            "CertificateRow(certificate=certificate, status=status)", id="another-class-status-argument"
        ),
        pytest.param(
            "class Row:\n    def __init__(self, status: str) -> None:\n        self.status = status",
            id="another-class-own-status-attribute",
        ),
        pytest.param("{'a': 1}.update(status='issued')", id="a-dict-literal-update"),
        pytest.param("response_status = response.status", id="reading-an-http-response-status"),
        pytest.param("request.save(update_fields=['status'])", id="saving-an-earlier-assignment"),
        pytest.param("Certificate.objects.filter(pk=1).update(revoked_at=now)", id="updating-other-fields"),
    ],
)
def test_the_scanner_does_not_report_reads_and_other_statuses(snippet: str) -> None:
    assert find_status_writes(snippet, "enroll/views.py", _status_models()) == []
