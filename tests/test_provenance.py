"""What an experiment step's record digests: a netdef's included libraries count like the
netdef itself, and records written before they did are adopted, not refused."""
from deeplab_compile.experiment import provenance as prov


def _tree(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "blocks.yaml").write_text("include: [more.yaml]\nvars: {width: 8}\n")
    (lib / "more.yaml").write_text("vars: {depth: 2}\n")
    net = tmp_path / "train.yaml"
    net.write_text("name: n\ninclude: [lib/blocks.yaml]\ninputs: {data: [3, 8, 8]}\n"
                   "layers:\n  - {name: c, type: Convolution, bottom: data, num_output: 2, kernel_size: 1}\n")
    return net, lib


def test_included_files_are_found_depth_first_like_the_expander(tmp_path):
    net, lib = _tree(tmp_path)
    assert prov.included_files(str(net)) == [str(lib / "blocks.yaml"), str(lib / "more.yaml")]
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: p\nlayers: []\n")
    assert prov.included_files(str(plain)) == [] and prov.includes_digest(str(plain)) is None
    assert prov.included_files(str(tmp_path / "absent.yaml")) == []


def test_a_changed_library_changes_the_digest_and_the_netdef_digest_does_not_see_it(tmp_path):
    net, lib = _tree(tmp_path)
    before, net_before = prov.includes_digest(str(net)), prov.file_digest(str(net))
    assert before is not None and len(before) == 64
    (lib / "more.yaml").write_text("vars: {depth: 3}\n")       # two levels down
    assert prov.includes_digest(str(net)) != before
    assert prov.file_digest(str(net)) == net_before


def test_an_unparsable_include_adds_nothing_and_does_not_raise(tmp_path):
    net, lib = _tree(tmp_path)
    (lib / "blocks.yaml").write_text("vars: [unclosed\n")
    assert prov.included_files(str(net)) == [str(lib / "blocks.yaml")]


def test_a_record_from_before_includes_were_digested_predates_only_when_the_rest_matches():
    now = {"data_root": "/d", "net": "a" * 64, "includes": "b" * 64}
    assert prov.predates({"data_root": "/d", "net": "a" * 64}, now, "includes")
    assert not prov.predates({"data_root": "/other", "net": "a" * 64}, now, "includes")
    assert not prov.predates(None, now, "includes")
    assert not prov.predates({"data_root": "/d", "net": "a" * 64, "includes": "c" * 64}, now, "includes")


def test_a_config_folder_of_the_tree_digests_the_zoo_library_it_includes():
    import os
    from deeplab_compile.netdef.search import zoo_dir
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    net = os.path.join(here, "experiments", "voc12", "config", "deeplab_largefov_tiny", "train.yaml")
    files = prov.included_files(net)
    assert [os.path.realpath(f) for f in files] == [os.path.realpath(os.path.join(zoo_dir(), "lib", "vgg16.yaml"))]
