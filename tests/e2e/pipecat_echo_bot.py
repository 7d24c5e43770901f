#!/usr/bin/env python3
"""A Pipecat voice bot that echoes the caller's audio back, for the end-to-end tests.

    $DEPS/pipecat-venv/bin/python tests/e2e/pipecat_echo_bot.py [--host 127.0.0.1] [--port 7860]

($DEPS is ${WHIPGATE_TEST_DEPS:-/var/cache/whipgate-test-deps}; scripts/install-test-deps
makes the venv with pipecat-ai[webrtc,runner]==1.14.0.) No model, no network: each
connection gets a pipeline transport.input() -> Echo -> transport.output() on Pipecat's
SmallWebRTC transport, at 48 kHz mono in and out, so what the caller sends on its audio
m-line (the first one; it must be sendrecv to hear anything) comes back on the same m-line
(about 195 ms later on loopback, 2 x 80 ms of which are aiortc's audio jitter buffers, which
wait for 4 packets, at the bot and at an aiortc caller), 6 dB down (aiortc's Opus encoder
upmixes mono to stereo at -3 dB, at each end).

It is served by Pipecat's own development runner (pipecat.runner.run.main: FastAPI under
uvicorn), restricted to the webrtc transport, with the runner's routes unchanged:
  POST  /api/offer  {"sdp","type":"offer","pc_id":null,"restart_pc":false,"request_data":{}}
                    -> 200 {"sdp","type":"answer","pc_id"}
  PATCH /api/offer  {"pc_id","candidates":[{"candidate","sdp_mid","sdp_mline_index"}]}
                    -> 200 {"status":"success"} (404 for an unknown pc_id)
  GET   /status     -> {"status":"ready","transports":["webrtc"]}
  POST  /start      (Pipecat Cloud style sessions, /sessions/<id>/api/offer)
Every runner option works too (--ice-servers, -v, ...), see --help.

Readiness: once the HTTP port accepts connections the bot prints (stdout, flushed)
    pipecat_echo_bot: ready on http://HOST:PORT
Pipecat's own "Bot ready!" banner comes before uvicorn has bound the port, so do not wait
for that one; polling GET /status until it answers 200 works as well.

SIGTERM or SIGINT stops the server, ending live sessions first (uvicorn alone would wait for
them). A session ends when the caller's peer connection closes (aiortc's close reaches the bot at
once: its connection goes "closed", the runner forgets the pc_id, the pipeline is cancelled) or
fails; the runner has no DELETE (405). pc_ids look like "SmallWebRTCConnection#0-<hex>": a '#'
to percent-encode if one ever goes into a URL.
"""

import argparse
import asyncio
import sys
from contextlib import asynccontextmanager

from loguru import logger

from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.run import app, main
from pipecat.runner.types import RunnerArguments, SmallWebRTCRunnerArguments
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

RATE = 48000

# Live sessions' connections, closed on SIGTERM/SIGINT (see _end_sessions_on_exit).
LIVE: dict = {}


class Echo(FrameProcessor):
    """Turns every audio frame heard into the same audio to be played back."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(OutputAudioRawFrame(
                audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels))
        else:
            await self.push_frame(frame, direction)


async def bot(runner_args: RunnerArguments):
    """Entry point the runner calls for each new connection (POST /api/offer)."""
    if not isinstance(runner_args, SmallWebRTCRunnerArguments):
        logger.error(f"echo bot: only the webrtc transport is supported, not {type(runner_args)}")
        return
    conn = runner_args.webrtc_connection
    transport = SmallWebRTCTransport(
        webrtc_connection=conn,
        params=TransportParams(
            audio_in_enabled=True,
            audio_in_sample_rate=RATE,
            audio_out_enabled=True,
            audio_out_sample_rate=RATE,
            audio_out_10ms_chunks=2,  # 20 ms, the caller's Opus frame size
        ),
    )
    worker = PipelineWorker(
        Pipeline([transport.input(), Echo(), transport.output()]),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        enable_rtvi=False,  # no client protocol: plain audio in, audio out
        idle_timeout_secs=None,  # no VAD, so "idle" would only mean "nobody spoke"
    )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client):
        logger.info(f"echo bot: {client.pc_id} connected, echoing")

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        logger.info(f"echo bot: {client.pc_id} gone, ending its session")
        await worker.cancel(reason="client disconnected")

    runner = WorkerRunner(handle_sigint=runner_args.handle_sigint)
    await runner.add_workers(worker)
    LIVE[conn] = asyncio.get_running_loop()
    try:
        await runner.run()
    finally:
        LIVE.pop(conn, None)
    logger.info(f"echo bot: session {conn.pc_id} ended")


def _end_sessions_on_exit():
    """Make SIGTERM/SIGINT end the live sessions, so that the server can stop.

    Each session runs as a FastAPI background task of its POST, and uvicorn's graceful
    shutdown waits for those before the runner's own lifespan closes the connections: a
    session that never ends (an offer without m-lines is answered 200 and never connects
    nor times out) would hold the process forever. Closing the connections first ends them.
    """
    import uvicorn

    handle_exit = uvicorn.Server.handle_exit

    def close_then_exit(self, sig, frame):
        for conn, loop in list(LIVE.items()):
            loop.call_soon_threadsafe(lambda c=conn: asyncio.ensure_future(c.disconnect()))
        handle_exit(self, sig, frame)

    uvicorn.Server.handle_exit = close_then_exit


def _announce_when_listening(host: str, port: int):
    """Lifespan hook: print the ready line once uvicorn accepts connections on host:port."""
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)

    async def wait_and_print():
        while True:
            try:
                _, w = await asyncio.open_connection(connect_host, port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        print(f"pipecat_echo_bot: ready on http://{host}:{port}", flush=True)

    previous = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        async with previous(a):
            task = asyncio.create_task(wait_and_print())
            try:
                yield
            finally:
                task.cancel()

    app.router.lifespan_context = lifespan


def _has_option(argv, *names):
    return any(a == n or a.startswith(n + "=") for a in argv for n in names)


if __name__ == "__main__":
    # main() parses sys.argv itself (its own options only); our defaults differ from the
    # runner's (localhost, every transport), so they are added when not given.
    if not _has_option(sys.argv[1:], "--host"):
        sys.argv += ["--host", "127.0.0.1"]
    if not _has_option(sys.argv[1:], "-t", "--transport"):
        sys.argv += ["--transport", "webrtc"]
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--host")
    peek.add_argument("--port", type=int, default=7860)
    known, _ = peek.parse_known_args(sys.argv[1:])
    _announce_when_listening(known.host, known.port)
    _end_sessions_on_exit()
    main(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
