"""The ingest loop reads the next batch ahead: one read before a rebalance may be
applied after it took a partition away. Applying it is safe (the offsets saved in
the database decide, under their lock); its position and lag are no longer ours to
report, and asking aiokafka about that partition would stop the service."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from consumer.adapters.kafka import Fetched
from consumer.service.ports import BatchOutcome
from tests.unit.offline_service import offline_service

REVOKED = TopicPartition("user.activity", 3)


def record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=REVOKED.topic,
        partition=REVOKED.partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"u",
        value=b"{}",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=2,
        headers=(),
    )


async def test_a_batch_read_before_a_rebalance_reports_nothing_for_a_partition_gone() -> None:
    service = offline_service()
    try:
        assert REVOKED not in service.consumer.assignment()
        service._applied(BatchOutcome(), Fetched({REVOKED: [record(7), record(8)]}))
        assert service.positions == {}
    finally:
        await service.consumer.stop()
