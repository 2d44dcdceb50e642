"""A job as the API shows it: the reference images sent and the ones left out, no storage keys."""

from gateway_testkit import Harness, auth, make_job

from atelier_contracts.jobs import ExcludedImage, SentReferenceImage
from atelier_gateway.models import JobOut


def test_job_out_shows_what_was_sent_and_what_was_not() -> None:
    job = make_job(
        "job-1",
        reference_images=[
            SentReferenceImage(
                element_id="mara",
                source="url",
                content_type="image/jpeg",
                width=640,
                height=480,
                size_bytes=51_200,
            )
        ],
        excluded_images=[ExcludedImage(element_id="harbour", reason="Over the maximum.")],
    )
    shown = JobOut.of(job).model_dump(mode="json", by_alias=True)
    assert shown["reference_images"] == [
        {
            "element_id": "mara",
            "source": "url",
            "media_id": None,
            "content_type": "image/jpeg",
            "width": 640,
            "height": 480,
            "size_bytes": 51_200,
            "style": False,
        }
    ]
    assert shown["excluded_images"] == [
        {"element_id": "harbour", "reason": "Over the maximum.", "media_id": None, "style": False}
    ]


def test_a_job_without_context_shows_empty_lists() -> None:
    shown = JobOut.of(make_job("job-1")).model_dump(mode="json")
    assert shown["reference_images"] == [] and shown["excluded_images"] == []


async def test_get_generation_serves_them(gateway: Harness) -> None:
    gateway.world.jobs["job-9"] = make_job(
        "job-9", excluded_images=[ExcludedImage(element_id="e", reason="Switched off.")]
    )
    response = await gateway.client.get("/v1/generations/job-9", headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert body["reference_images"] == []
    assert body["excluded_images"] == [
        {"element_id": "e", "reason": "Switched off.", "media_id": None, "style": False}
    ]
