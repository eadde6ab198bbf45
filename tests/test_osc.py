"""The OSC input over real UDP on loopback: python-osc's client sends, livegen listens;
malformed datagrams and messages are dropped and counted, never fatal."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable

import pytest
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from livegen.config import OscInputConfig
from livegen.inputs import create
from livegen.inputs.base import Backoff, Reading, supervise
from livegen.inputs.osc import OscInput


def listen(body: Callable[[OscInput, tuple[str, int], list[Reading]], Awaitable[None]],
           **keys: object) -> tuple[OscInput, list[Reading]]:
    """Run an OSC input on a free loopback port under the supervisor while `body` sends."""
    osc = create("phone", OscInputConfig(type="osc", port=0, **keys))
    assert isinstance(osc, OscInput)
    readings: list[Reading] = []

    async def main() -> None:
        task = asyncio.create_task(supervise(osc, readings.append))
        await asyncio.wait_for(osc.bound.wait(), 5)
        assert osc.address is not None
        await body(osc, osc.address, readings)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return osc, readings


async def settle(readings: list[Reading], count: int, timeout: float = 3.0) -> None:
    """Wait until `count` readings arrived (UDP on loopback is quick, the machine busy)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while len(readings) < count and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)


def test_messages_become_readings_with_one_key_per_float() -> None:
    async def body(osc: OscInput, address: tuple[str, int], readings: list[Reading]) -> None:
        client = SimpleUDPClient(*address)
        client.send_message("/livegen/in/tension", 0.25)
        client.send_message("/livegen/in/hand", [0.1, 0.9, 3])
        client.send_message("/livegen/in/hand/y", 0.7)
        bundle = OscBundleBuilder(IMMEDIATELY)
        for name, value in (("a", 1.0), ("b", 2.0)):
            message = OscMessageBuilder(f"/livegen/in/{name}")
            message.add_arg(value)
            bundle.add_content(message.build())
        client.send(bundle.build())
        await settle(readings, 5)

    osc, readings = listen(body)
    assert [dict(r.values) for r in readings] == [
        {"tension": 0.25},
        {"hand.0": pytest.approx(0.1), "hand.1": pytest.approx(0.9), "hand.2": 3.0},
        {"hand.y": pytest.approx(0.7)},
        {"a": 1.0},
        {"b": 2.0},
    ]
    assert all(r.source == "phone" for r in readings)
    assert readings == sorted(readings, key=lambda r: r.t)
    assert osc.address is not None and osc.address[0] == "127.0.0.1"
    assert not osc.stats.dropped


def test_malformed_packets_and_messages_are_dropped_and_counted() -> None:
    async def body(osc: OscInput, address: tuple[str, int], readings: list[Reading]) -> None:
        client = SimpleUDPClient(*address)
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for datagram in (b"", b"hello world", b"\x00\x01\x02",
                             # a cut-off int (python-osc pads a cut-off float on
                             # purpose: Reaktor sends them)
                             b"/livegen/in/x\x00\x00\x00,i\x00\x00\x00\x01",
                             b"#bundle\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\xff"):
                raw.sendto(datagram, address)
        finally:
            raw.close()
        client.send_message("/livegen/in/word", "loud")          # a string
        client.send_message("/livegen/in/flag", True)            # an OSC T, not a level
        client.send_message("/livegen/in/blob", b"\x01\x02")     # a blob
        client.send_message("/livegen/in/level", float("nan"))
        client.send_message("/livegen/in/level", float("inf"))
        client.send_message("/livegen/in/empty", [])
        client.send_message("/other/level", 0.5)
        client.send_message("/livegen/in/", 0.5)
        client.send_message("/livegen/in/a//b", 0.5)
        client.send_message("/livegen/in/ok", 0.5)  # and then a good one still gets through
        await settle(readings, 1)

    osc, readings = listen(body)
    assert [dict(r.values) for r in readings] == [{"ok": 0.5}]
    dropped = osc.stats.dropped
    assert dropped["unparsable"] == 4
    assert dropped["no messages"] == 1  # the bundle whose content is junk
    assert dropped["wrong type"] == 3
    assert dropped["nan"] == 2
    assert dropped["no values"] == 1
    assert dropped["unknown address"] == 1
    assert dropped["bad name"] == 2


def test_prefix_comes_from_the_config() -> None:
    async def body(osc: OscInput, address: tuple[str, int], readings: list[Reading]) -> None:
        client = SimpleUDPClient(*address)
        client.send_message("/livegen/in/x", 0.5)
        client.send_message("/mediapipe/wrist/x", 0.25)
        await settle(readings, 1)

    osc, readings = listen(body, prefix="/mediapipe")
    assert [dict(r.values) for r in readings] == [{"wrist.x": 0.25}]
    assert osc.stats.dropped["unknown address"] == 1


def test_a_port_in_use_fails_and_is_retried() -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", 0))
    port = blocker.getsockname()[1]
    osc = OscInput("phone", OscInputConfig(type="osc", port=port))

    async def main() -> None:
        task = asyncio.create_task(supervise(osc, lambda r: None, Backoff(first=0.05)))
        for _ in range(100):
            if osc.stats.restarts >= 2:
                break
            await asyncio.sleep(0.02)
        blocker.close()  # the port comes free: the next attempt binds
        await asyncio.wait_for(osc.bound.wait(), 5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert osc.stats.restarts >= 2
    assert "in use" in osc.stats.last_error
