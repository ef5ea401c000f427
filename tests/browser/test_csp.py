"""The pages under the strict Content-Security-Policy, in real Chromium.

The sign-in page, the chat page (sending a message and following its stream included) and the
admin load, run their scripts and apply their styles without the browser blocking anything, and
every HTML response the browser receives carries the policy.
"""
from __future__ import annotations

from typing import Any

import pytest

from chat.middleware import CONTENT_SECURITY_POLICY
from tests.support import MODEL

from .conftest import Tab

expect = pytest.importorskip("playwright.sync_api").expect

pytestmark = pytest.mark.browser

STAFF = ("csp-admin", "csp-admin-pass-5510")
ANSWER_TIMEOUT_MS = 180_000  # the CPU may be shared with other work

# Runs before any of the page's own code, in every document the tab loads.
REPORT_VIOLATIONS = """
document.addEventListener('securitypolicyviolation', (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.reportCspViolation(`${e.effectiveDirective} blocked ${e.blockedURI || 'inline'} at ${where}`);
});
"""


class PolicyWatch:
    """What the browser did about the policy in one tab: each HTML document it received and each
    violation it reported, across navigations."""

    def __init__(self, tab: Tab) -> None:
        self.tab = tab
        self.documents: list[Any] = []
        self.violations: list[str] = []
        tab.page.expose_function("reportCspViolation", lambda text: self.violations.append(text))
        tab.page.add_init_script(REPORT_VIOLATIONS)
        tab.page.on("response", self._record)

    def _record(self, response: Any) -> None:
        if response.request.resource_type == "document":
            self.documents.append(response)

    def assert_clean(self) -> None:
        self.tab.page.evaluate("() => new Promise((done) => setTimeout(done, 100))")  # late reports arrive
        assert self.violations == [], "the browser blocked something under the policy"
        self.tab.assert_clean()  # Chromium also logs each refusal as a console error
        assert self.documents, "no HTML page was loaded"
        for response in self.documents:
            headers = response.all_headers()
            assert headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, response.url


def signed_in_tab(open_tab: Any, path: str, login_path: str, submit: str, username: str, password: str) -> PolicyWatch:
    """A signed-out tab, watched from its first request, that opens ``path``, is sent to the
    sign-in form at ``login_path``, signs in there and comes back to ``path``."""
    tab = open_tab(user=None)
    watch = PolicyWatch(tab)
    page = tab.page
    page.goto(tab.url(path))
    page.wait_for_url(f"**{login_path}**")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click(submit)
    page.wait_for_url(tab.url(path))
    return watch


@pytest.fixture(scope="module")
def staff(live_server_proc: Any) -> tuple[str, str]:
    """A superuser, and one usage record so the admin's per-day usage table has a row."""
    username, password = STAFF
    live_server_proc.manage("shell", "-c", "\n".join([
        "from django.contrib.auth import get_user_model",
        "from chat.models import UsageRecord",
        "U = get_user_model()",
        f"u = U.objects.filter(username={username!r}).first() or U(username={username!r})",
        f"u.is_staff = u.is_superuser = True; u.set_password({password!r}); u.save()",
        f"UsageRecord.objects.create(user=u, model={MODEL!r}, endpoint='chat', prompt_tokens=12,"
        " completion_tokens=8, finish_reason='stop', duration_ms=40)",
    ]))
    return STAFF


def test_sign_in_and_chat_run_under_the_policy(open_tab: Any, users: dict[str, str]) -> None:
    watch = signed_in_tab(open_tab, "/", "/accounts/login/", "[data-testid=login-submit]", "alice", users["alice"])
    page = watch.tab.page

    # the module script ran: the catalog is in the picker and the composer reacts
    expect(page.locator("[data-testid=model-select]")).to_have_value(MODEL)
    page.click("[data-testid=settings-toggle]")
    page.fill("[data-testid=max-tokens]", "8")
    page.dispatch_event("[data-testid=max-tokens]", "change")
    page.click("[data-testid=settings-toggle]")
    page.fill("[data-testid=prompt]", "Say hello.")
    expect(page.locator("[data-testid=send]")).to_be_enabled()
    page.press("[data-testid=prompt]", "Enter")
    page.wait_for_selector("[data-testid=message][data-role=assistant][data-state=done]", timeout=ANSWER_TIMEOUT_MS)

    # the stylesheet applies: table alignment comes from classes, not inline styles
    align = page.evaluate("""() => {
      const box = document.createElement('div');
      box.className = 'md';
      box.appendChild(window.ChatMarkdown.render('| a | b |\\n|:-:|--:|\\n| 1 | 2 |'));
      document.getElementById('thread').appendChild(box);
      const cells = [...box.querySelectorAll('td')].map((td) => getComputedStyle(td).textAlign);
      box.remove();
      return cells;
    }""")
    assert align == ["center", "right"]

    page.click("[data-testid=logout]")
    page.wait_for_url("**/accounts/login/")
    watch.assert_clean()


def test_the_admin_runs_under_the_policy(open_tab: Any, staff: tuple[str, str]) -> None:
    watch = signed_in_tab(open_tab, "/admin/", "/admin/login/", "input[type=submit]", *staff)
    tab, page = watch.tab, watch.tab.page

    page.goto(tab.url("/admin/chat/usagerecord/"))
    daily = page.get_by_role("heading", name="Usage per token and day")
    expect(daily).to_be_visible()
    margin, font = page.evaluate("(h) => [getComputedStyle(h).marginTop, getComputedStyle(h).fontSize]",
                                 daily.element_handle())
    assert float(margin.removesuffix("px")) == 2 * float(font.removesuffix("px")), "its margin-top: 2em"

    # a form with the admin's date and time widgets (built by its scripts)
    page.goto(tab.url("/admin/chat/apitoken/add/"))
    page.locator(".field-expires_at .datetimeshortcuts a", has_text="Today").click()
    assert page.input_value("#id_expires_at_0")

    page.goto(tab.url("/admin/chat/catalogentry/"))  # editable list with actions
    page.locator("#action-toggle").check()
    expect(page.locator(".action-counter")).to_contain_text("selected")
    watch.assert_clean()
