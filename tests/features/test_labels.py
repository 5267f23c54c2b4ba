import hashlib

import pytest

from features.labels import LabelError, LabelTable, Vocabulary, read_label_table


def test_rows_split_names_and_indices_and_skip_the_header():
    table = read_label_table('id,labels\ncats/a,cat;animal\n"x,y",3; 7\nlonely,\n\n')
    assert table == LabelTable({"cats/a": ("cat", "animal"), "x,y": ("3", "7"), "lonely": ()})
    assert read_label_table("Id, Labels\n").rows == {}
    assert read_label_table("a,b\n").rows == {"a": ("b",)}  # no header: a row


def test_a_file_saved_by_excel_reads_the_same():
    excel = '\ufeffid,labels\r\ncats/a,cat;animal\r\n"dogs/b,c",dog\r\n"odd\nname",eel,,\r\n'
    table = read_label_table(excel.encode())
    assert table.rows == {"cats/a": ("cat", "animal"), "dogs/b,c": ("dog",), "odd\nname": ("eel",)}
    assert "labels" not in {token for tokens in table.rows.values() for token in tokens}


def test_a_bom_before_a_headerless_first_row_is_not_part_of_the_id():
    assert read_label_table("\ufeffcats/a,cat\r\n").rows == {"cats/a": ("cat",)}


def test_conflicting_duplicate_rows_are_merged_and_counted():
    text = "a,cat\na,dog\nb,eel\nb,eel\nc,x;y\nc,y;x\nd,cat\nd,cat;dog\n"
    table = read_label_table(text)
    assert table.rows["a"] == ("cat", "dog") and table.rows["d"] == ("cat", "dog")
    assert table.rows["b"] == ("eel",) and table.rows["c"] == ("x", "y")
    assert table.conflicting == 2  # a and d; b repeats itself, c only reorders


def test_bad_rows_and_encodings_name_the_file_and_row():
    with pytest.raises(LabelError, match=r"labels.csv: row 2: expected 2 columns"):
        read_label_table("a,b\na,b,c\n", source="labels.csv")
    with pytest.raises(LabelError, match=r"row 1: the id \(first column\) is empty"):
        read_label_table(" ,cat\n")
    with pytest.raises(LabelError, match="not UTF-8.*CSV UTF-8"):
        read_label_table("caf\xe9,x\n".encode("cp1252"), source="labels.csv")


def test_vocabulary_sorted_and_round_trips_through_csv():
    vocabulary = Vocabulary.from_names(["dog", "cat", "dog", "eel"])
    assert vocabulary.names == ("cat", "dog", "eel")
    assert vocabulary.to_csv() == "Index,Name\n0,cat\n1,dog\n2,eel\n"
    assert Vocabulary.from_csv(vocabulary.to_csv()) == vocabulary
    assert Vocabulary.from_csv("\ufeff" + vocabulary.to_csv().replace("\n", "\r\n")) == vocabulary


def test_an_extended_vocabulary_keeps_every_index():
    committed = Vocabulary(("dog", "cat"))  # not sorted: a --vocabulary given as is
    grown = committed.extended(["zebra", "cat", "ant", "dog"])
    assert grown.names == ("dog", "cat", "ant", "zebra")
    assert grown.indices(["dog", "cat"]) == committed.indices(["dog", "cat"]) == [0, 1]
    assert committed.extended(["cat"]) == committed
    assert grown.sha256() == hashlib.sha256(grown.to_csv().encode()).hexdigest()
    assert grown.sha256() != committed.sha256()


def test_indices_accept_names_and_numbers_and_reject_unknowns():
    vocabulary = Vocabulary(("cat", "dog", "eel"))
    assert vocabulary.indices(["eel", "cat", "1", "cat"]) == [0, 1, 2]
    with pytest.raises(LabelError, match="'cow'"):
        vocabulary.indices(["cow"])
    with pytest.raises(LabelError, match="'3'"):
        vocabulary.indices(["3"])
    with pytest.raises(LabelError, match="'²'"):
        vocabulary.indices(["²"])
    assert Vocabulary(()).indices(["4000", "2"]) == [2, 4000]


def test_youtube8m_vocabulary_with_extra_columns():
    text = "Index,TrainVideoCount,KnowledgeGraphId,Name\n1,5,/m/b,Car\n0,9,/m/a,Game\n"
    assert Vocabulary.from_csv(text).names == ("Game", "Car")
    with pytest.raises(LabelError, match="without gaps"):
        Vocabulary.from_csv("Index,Name\n0,a\n2,b\n")
