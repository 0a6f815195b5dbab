"""The Faust application of the classification worker, configured from medroute's settings."""

from __future__ import annotations

from typing import Any

import faust
from faust.types import TransportT

from medroute.config import DICOM_INBOUND, HL7_INBOUND, KafkaSettings, home_dir
from medroute.kafka.client import connection_kwargs
from pipeline.consumer import read_every_record_of
from pipeline.settings import DEFAULT_APP_ID, WorkerSettings

APP_ID = DEFAULT_APP_ID


def broker_urls(settings: KafkaSettings) -> list[str]:
    return [f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",") if server.strip()]


def broker_credentials(settings: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """TLS and SASL as Faust takes them, from the same settings as every other Kafka client."""
    ssl_context = connection_kwargs(settings).get("ssl_context")
    if settings.sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password,
            ssl_context=ssl_context,
            mechanism=settings.sasl_mechanism,
        )
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context)
    return None


class WorkerApp(faust.App):
    """Faust's app with the consumer that reads a jump in the inbound topics' offsets again
    (:mod:`pipeline.consumer`)."""

    def _new_transport(self) -> TransportT:
        transport = super()._new_transport()
        read_every_record_of(transport, (HL7_INBOUND, DICOM_INBOUND))
        return transport


def create_app(kafka: KafkaSettings, settings: WorkerSettings, **overrides: Any) -> faust.App:
    datadir = home_dir() / "worker"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "broker": broker_urls(kafka),
        "broker_credentials": broker_credentials(kafka),
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 3.0,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "store": settings.store,
        "datadir": str(datadir),
        "topic_partitions": kafka.partitions,
        "topic_replication_factor": kafka.replication,
        # Faust declares only its own internal topics (the table changelog). The medroute topics are
        # created beforehand by `medroute.kafka.topics`: sources are not internal, so never declared.
        "topic_allow_declare": True,
        "topic_disable_leader": True,
        "producer_acks": -1,
        # A micro-batch's decisions and audit events leave in a few produce requests, not one each: a
        # request per message cost a quarter of the worker's CPU in socket writes.
        "producer_linger_ms": 5,
        "web_enabled": settings.web_port > 0,
        "web_port": settings.web_port or 6066,
        "web_bind": "127.0.0.1",
        "worker_redirect_stdouts": False,
        "stream_recovery_delay": 0.5,
    }
    options.update(overrides)
    return WorkerApp(settings.app_id, **options)
