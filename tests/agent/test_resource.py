from tracehouse.agent import resource

CID = "a" * 12 + "0123456789abcdef" * 3 + "b" * 4


def test_container_id_from_cgroup_v1(tmp_path):
    (tmp_path / "cgroup").write_text(f"12:memory:/docker/{CID}\n11:cpu,cpuacct:/docker/{CID}\n")
    assert resource.container_id(str(tmp_path)) == CID


def test_container_id_from_mountinfo_v2(tmp_path):
    (tmp_path / "cgroup").write_text("0::/\n")
    (tmp_path / "mountinfo").write_text(
        "1 0 0:1 / / rw - overlay overlay rw\n"
        f"2 1 8:1 /var/lib/docker/containers/{CID}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n")
    assert resource.container_id(str(tmp_path)) == CID


def test_no_container(tmp_path):
    (tmp_path / "cgroup").write_text("0::/user.slice\n")
    assert resource.container_id(str(tmp_path)) is None


def test_kubernetes_and_resource_attributes(monkeypatch):
    env = {"POD_NAME": "web-1", "POD_NAMESPACE": "shop"}
    assert resource.k8s_attributes(env) == {"k8s.pod.name": "web-1", "k8s.namespace.name": "shop"}
    assert resource.k8s_attributes({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "web-2"}) == \
        {"k8s.pod.name": "web-2"}
    attrs = resource.attributes("svc", {"deployment.environment": "prod", "service.version": "1.2"})
    assert attrs["service.name"] == "svc" and attrs["deployment.environment"] == "prod"
    assert attrs["service.version"] == "1.2" and attrs["host.name"] and attrs["process.pid"] > 0
    assert len(attrs["service.instance.id"]) == 36
