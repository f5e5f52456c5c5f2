import random, pytest
from tests.integration.test_s3_storage import storage, bucket, make_bucket, payload, MiB
@pytest.mark.parametrize("seed", range(20, 26))
def test_dbg(s3_server, bucket, faulty_proxy, seed):
    repo = storage(s3_server, f"s3://{bucket}/portal", endpoint=faulty_proxy.url)
    repo.multipart_threshold = 5 * MiB
    repo.part_size = 5 * MiB
    faulty_proxy.configure(error_500=0.06, slowdown=0.06, reset=0.08, truncate=0.08, seed=seed)
    rng = random.Random(seed)
    objects = {f"packs/{n:02x}/{n}": rng.randbytes(rng.choice((0, 5000, 11 * MiB if n % 10 == 0 else 7))) for n in range(30)}
    for k, d in objects.items(): repo.put(k, d)
    for k, d in objects.items(): assert repo.get(k) == d
    assert {i.key for i in repo.list("")} == set(objects)
    for k in list(objects)[:10]: repo.delete(k)
    assert len(list(repo.list(""))) == 20
    print(seed, faulty_proxy.counts)
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
