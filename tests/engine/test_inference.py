from gfldet.engine.inference import evaluated_image_ids


def test_unreadable_images_are_left_out_of_the_evaluation(capsys):
    predictions = [{"image_id": 7}, {"image_id": 3}]  # image 5 was skipped (data.on_bad_image: skip)
    assert evaluated_image_ids(predictions, [3, 5, 7]) == [3, 7]
    out = capsys.readouterr().out
    assert "1 image(s) could not be read" in out and "ids [5]" in out
    assert evaluated_image_ids(predictions, [3, 7]) == [3, 7]
    assert capsys.readouterr().out == ""
