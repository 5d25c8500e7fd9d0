"""The paper's experiments on top of the API: localisation and OOD detection.

docs/method.md, section 5, on any checkpoint and data folder:

* **Weakly supervised localisation (WSOL).** Every image is centre-cropped
  and resized to the 224 x 224 square the maps live on, its ground-truth
  boxes are moved the same way (`convis_jax.evaluation.boxes`), and the map of the
  concept (`bird.n.01` for CUB) is scored per image by `localise`: the hits
  of MaxBoxAcc (one box, IoU 0.5) and MaxBoxAccV2 (all boxes, IoU 0.3 / 0.5
  / 0.7) at every threshold t in {0, 0.01, ..., 0.99} under one box
  protocol ("convis", the paper's, on the square; or "wsolevaluation", on
  the map resized as the export writes it), and TorchRay's pointing game.
  `summarise_wsol` turns the per-image hits into the metrics
  (`convis_jax.evaluation.localisation`, `convis_jax.evaluation.pointing`).
* **Out-of-distribution detection.** Whole images (the model's own
  preprocessing, no windows) are scored against the ID synset: "naive" is
  the cosine with the ID synset's text embedding, "hierarchy" the maximum
  cosine over the leaves of its subtree in the vocabulary. AUROC separates
  the ID side of a pair from the OOD side.
* **Resuming.** Per-image results are appended to a JSON-lines file
  (`ResultLog`) as soon as they are known; a rerun with the same settings
  skips every image already there.
* **Protocols.** MaxBoxAcc, MaxBoxAccV2, the pointing game and
  deletion/insertion take `protocol=`, which reproduces a reference
  implementation's rules exactly (docs/protocols.md): "convis" (the ConVis
  authors' script, MaxBoxAcc's default), "wsolevaluation" (Choe et al.'s
  `BoxEvaluator`, MaxBoxAccV2's default), "torchray" (the pointing game's
  default), "rise" (RISE's `CausalMetric`).
* **Export.** `export_wsolevaluation` writes maps as Choe et al.'s
  wsolevaluation code scores them: 224 x 224, one `.npy` per image.

Modules, in the order a result is made: `datasets` (readers of CUB and
ImageNet folders), `scene_folder` (folders of synthetic scenes), `boxes` (ground truth moved onto the
224 square, IoU), `maps` (map functions over a `ConVis`), the metrics
(`localisation`: MaxBoxAcc and MaxBoxAccV2; `pointing`: the pointing game;
`perturbation`: deletion/insertion; `protocols`: the reference protocols'
rules), `wsol` and `ood` (the runners; `ood` also holds AUROC),
`logs` (resumable per-image results, JSON reports) and `export`
(wsolevaluation's layout). Model work goes through the objects passed in (a
`ConVis`, a `ClipModel`), so nothing here imports a framework or the command
line.
"""

from convis_jax.evaluation.boxes import (
    as_boxes,
    box_iou,
    boxes_from_square,
    boxes_to_square,
    convis_square_boxes,
    wsolevaluation_boxes,
)
from convis_jax.evaluation.datasets import (
    CubRecord,
    ImageNetRecord,
    OodPair,
    read_cub,
    read_imagenet_folders,
    split_ood,
)
from convis_jax.evaluation.export import (
    export_wsolevaluation,
    wsolevaluation_map,
    wsolevaluation_path,
)
from convis_jax.evaluation.localisation import (
    localisation_hits,
    max_box_acc,
    max_box_acc_v2,
)
from convis_jax.evaluation.logs import ResultLog, default_log_path, write_json
from convis_jax.evaluation.maps import (
    SQUARE,
    MapFn,
    gradient_map_fn,
    image_seed,
    occlusion_map_fn,
    unit_square_maps,
)
from convis_jax.evaluation.ood import (
    OodConcepts,
    OodPairResult,
    OodRun,
    OodScores,
    auroc,
    format_ood_table,
    image_key,
    ood_concepts,
    ood_report,
    ood_scores,
    pair_name,
    run_ood,
)
from convis_jax.evaluation.perturbation import deletion_auc, insertion_auc, rise_blur
from convis_jax.evaluation.pointing import pointing_game
from convis_jax.evaluation.protocols import (
    BOX_PROTOCOLS,
    PERTURBATION_PROTOCOLS,
    POINTING_PROTOCOLS,
)
from convis_jax.evaluation.scene_folder import (
    SceneRecord,
    read_scene_folder,
    write_scene_folder,
)
from convis_jax.evaluation.wsol import (
    POINTING_PROTOCOL,
    POINTING_TOLERANCE,
    WSOL_CONCEPT,
    Localisation,
    WsolItem,
    WsolSummary,
    cub_items,
    format_wsol_table,
    item_key,
    localise,
    run_wsol,
    scene_items,
    summarise_wsol,
    wsol_report,
)
