"""The demo's bundled data: a knowledge base, per-tenant CRM records, and service logs.

The same order number exists for both tenants with different contents, so that a cache that
forgets the tenant serves a visibly wrong answer."""

from __future__ import annotations

import re
from typing import Any

KB = [
    (
        "refund-policy",
        "Refund policy",
        "Refunds (money back) are issued to the original payment method within 5 business "
        "days. Damaged or broken items are refunded in full; duplicate charges on an invoice "
        "are reversed by billing.",
    ),
    (
        "shipping-times",
        "Shipping times",
        "Standard shipping takes 3 to 5 days; orders in transit can be tracked from the order "
        "page. Delivery estimates are updated when the carrier scans the parcel.",
    ),
    (
        "checkout-502",
        "Runbook: checkout 502 errors",
        "HTTP 502 at checkout usually means the payment gateway is failing. Check gateway health, "
        "fail over to the secondary gateway, and watch the error rate for 10 minutes.",
    ),
    (
        "login-latency",
        "Runbook: login latency",
        "High login latency is most often the session store. Check its p95, connection pool "
        "saturation and recent deploys; scale the session store before the API tier.",
    ),
    (
        "order-status",
        "Order status meanings",
        "Processing: payment received. Shipped: handed to the carrier. In transit: on its way. "
        "Delivered: signed for at the address on the order.",
    ),
    (
        "data-privacy",
        "Customer data",
        "Never include a customer's email address or phone number in an answer; refer to the "
        "account instead.",
    ),
]

ORDERS: dict[str, dict[str, dict[str, Any]]] = {
    "acme": {
        "1182": {
            "status": "delivered",
            "amount": 49.90,
            "item": "ceramic teapot",
            "email": "jane.doe@acme.example",
            "eta": None,
        },
        "2291": {
            "status": "delivered",
            "amount": 120.00,
            "item": "standing desk mat",
            "email": "omar@acme.example",
            "eta": None,
        },
        "4410": {
            "status": "in transit",
            "amount": 15.50,
            "item": "usb-c cable",
            "email": "li.wei@acme.example",
            "eta": "2026-11-27",
        },
        "7781": {
            "status": "processing",
            "amount": 310.00,
            "item": "office chair",
            "email": "ana@acme.example",
            "eta": "2026-12-02",
        },
        "1029": {
            "status": "delivered",
            "amount": 22.00,
            "item": "notebook set",
            "email": "sam@acme.example",
            "eta": None,
        },
        "3356": {
            "status": "shipped",
            "amount": 89.00,
            "item": "desk lamp",
            "email": "kim@acme.example",
            "eta": "2026-11-26",
        },
    },
    "globex": {
        "1182": {
            "status": "processing",
            "amount": 999.00,
            "item": "server rack",
            "email": "ops@globex.example",
            "eta": "2026-12-10",
        },
        "2291": {
            "status": "delivered",
            "amount": 45.00,
            "item": "label printer",
            "email": "it@globex.example",
            "eta": None,
        },
        "4410": {
            "status": "delivered",
            "amount": 60.00,
            "item": "keyboard",
            "email": "hr@globex.example",
            "eta": None,
        },
        "7781": {
            "status": "shipped",
            "amount": 12.00,
            "item": "mouse pad",
            "email": "desk@globex.example",
            "eta": "2026-11-28",
        },
        "1029": {
            "status": "in transit",
            "amount": 75.00,
            "item": "webcam",
            "email": "av@globex.example",
            "eta": "2026-11-29",
        },
        "3356": {
            "status": "delivered",
            "amount": 18.00,
            "item": "hdmi adapter",
            "email": "av@globex.example",
            "eta": None,
        },
    },
    "initech": {
        number: {
            "status": status,
            "amount": amount,
            "item": item,
            "email": f"{who}@initech.example",
            "eta": eta,
        }
        for number, status, amount, item, who, eta in (
            ("1182", "shipped", 15.00, "red stapler", "milton", "2026-11-27"),
            ("2291", "delivered", 240.00, "printer toner", "peter", None),
            ("4410", "processing", 32.50, "tps cover sheets", "bill", "2026-12-01"),
            ("7781", "delivered", 8.00, "coffee mugs", "joanna", None),
            ("1029", "in transit", 410.00, "fax machine", "michael", "2026-11-28"),
            ("3356", "shipped", 55.00, "whiteboard", "samir", "2026-11-26"),
        )
    },
}
INVOICES = {"INV-5530": {"amount": 19.99, "reason": "duplicate charge"}}

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-case words with a crude stemming (refunds, refunded -> refund)."""
    return [_stem(word) for word in _WORD.findall(text.lower())]


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def tokens(text: str) -> int:
    """A deterministic token count: about four characters a token, as tokenizers average."""
    return max(1, (len(text) + 3) // 4)


def log_lines(service: str, count: int = 400) -> list[str]:
    """A large, deterministic log for ``service`` (the agent summarises it before using it)."""
    lines = []
    for i in range(count):
        minute = 40 + (i * 15) // count
        if service == "checkout" and i % 7 == 0:
            lines.append(
                f"09:{minute:02d}:{i % 60:02d} ERROR checkout upstream payment-gateway "
                f"returned HTTP 502 region=eu-west trace={i:05x}"
            )
        elif service == "login" and i % 9 == 0:
            lines.append(
                f"09:{minute:02d}:{i % 60:02d} WARN login session-store latency "
                f"{3800 + i * 3} ms p95 pool=exhausted"
            )
        else:
            lines.append(
                f"09:{minute:02d}:{i % 60:02d} INFO {service} request ok duration={20 + i % 30}ms"
            )
    return lines
