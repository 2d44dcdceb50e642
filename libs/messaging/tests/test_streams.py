from atelier_contracts.subjects import ALL_STREAMS, gen_requested, job_status
from atelier_messaging import stream_for_subject


def test_every_subject_has_exactly_one_stream() -> None:
    for subject in (
        "jobs.requested",
        "jobs.enriched",
        gen_requested("openai"),
        "gen.completed",
        "media.landed",
        job_status("p1", "j1"),
        "profiles.changed",
    ):
        assert stream_for_subject(subject) in ALL_STREAMS
