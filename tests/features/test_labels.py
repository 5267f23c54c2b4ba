import pytest

from features.labels import LabelError, Vocabulary, is_header, parse_labels_row


def test_rows_split_names_and_indices():
    assert parse_labels_row("cats/a,cat;animal") == ("cats/a", ["cat", "animal"])
    assert parse_labels_row('"x,y",3; 7') == ("x,y", ["3", "7"])
    assert parse_labels_row("lonely,") == ("lonely", [])
    assert is_header("id,labels") and is_header("Id, Labels") and not is_header("a,b")


def test_bad_row_names_the_line():
    with pytest.raises(LabelError, match="2 columns"):
        parse_labels_row("a,b,c")


def test_vocabulary_sorted_and_round_trips_through_csv():
    vocabulary = Vocabulary.from_names(["dog", "cat", "dog", "eel"])
    assert vocabulary.names == ("cat", "dog", "eel")
    assert vocabulary.to_csv() == "Index,Name\n0,cat\n1,dog\n2,eel\n"
    assert Vocabulary.from_csv(vocabulary.to_csv()) == vocabulary


def test_indices_accept_names_and_numbers_and_reject_unknowns():
    vocabulary = Vocabulary(("cat", "dog", "eel"))
    assert vocabulary.indices(["eel", "cat", "1", "cat"]) == [0, 1, 2]
    with pytest.raises(LabelError, match="'cow'"):
        vocabulary.indices(["cow"])
    with pytest.raises(LabelError, match="'3'"):
        vocabulary.indices(["3"])
    assert Vocabulary(()).indices(["4000", "2"]) == [2, 4000]


def test_youtube8m_vocabulary_with_extra_columns():
    text = "Index,TrainVideoCount,KnowledgeGraphId,Name\n1,5,/m/b,Car\n0,9,/m/a,Game\n"
    assert Vocabulary.from_csv(text).names == ("Game", "Car")
    with pytest.raises(LabelError, match="without gaps"):
        Vocabulary.from_csv("Index,Name\n0,a\n2,b\n")
