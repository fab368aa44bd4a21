"""Random streams for the fillers: Caffe's own stream, bit for bit, and a fast one.

Two classes with the same methods (``uniform``, ``gaussian``, ``bernoulli``, ``words``),
each returning new numpy arrays:

* :class:`CaffeRNG` reproduces BVLC Caffe's global random engine exactly: a
  ``boost::mt19937`` seeded with ``Caffe::set_random_seed(seed)`` and read through Boost's
  distributions as Caffe's ``caffe_rng_uniform`` / ``caffe_rng_gaussian`` /
  ``caffe_rng_bernoulli`` do (Boost >= 1.64, float nets).  Its 32-bit words are numpy's
  ``MT19937`` seeded the legacy way (``RandomState(seed)``); everything after that is
  vectorized numpy, no Python loop per sample.
* :class:`FastRNG` draws the same distributions from a numpy ``Generator`` (PCG64 by
  default): statistically equivalent, not Caffe's numbers, and faster.

:func:`make_rng` turns ``None``, a seed, a ``Generator`` or an existing stream into one of
these.

Caffe's per-sample rules, as implemented here (u is one 32-bit word):

* uniform(a, b): Boost ``uniform_real<float>`` on ``[a, b')`` with
  ``b' = nextafterf(b, FLT_MAX)``: ``r = (float(u) / 2^32) * (b' - a) + a`` in float32
  (two roundings), drawn again while ``r >= b'``.
* bernoulli(p): ``p == 0`` gives zeros without drawing; otherwise
  ``float(u) <= p * 4294967296.0f``.
* gaussian(mu, sigma): ``z * sigma + mu`` in float32 with ``z`` from Boost's ziggurat
  ``normal_distribution<float>`` (128 strips, sign from bit 0 of the word, strip from bits
  1..7, ``x = float(u >> 8) * 2^-24 * float(X[i])``; fast accept if ``x < X[i+1]`` compared
  in double; strip 0 falls back to the tail, sampled with two ziggurat exponentials; other
  strips draw one more word ``y01`` and test the strip's bounds).  About 1.04 words per
  sample.
"""

from __future__ import annotations

import math
import operator

import numpy as np

__all__ = ["CaffeRNG", "FastRNG", "make_rng", "RNG_KINDS"]

RNG_KINDS = ("fast", "caffe")

_F32 = np.float32
_FLT_MAX = np.finfo(np.float32).max
_TWO_M24 = np.float32(2.0 ** -24)
_TWO_M32 = np.float32(2.0 ** -32)
_TWO_32F = np.float32(4294967296.0)

# ---------------------------------------------------------------------------------------
# Boost's ziggurat tables (boost/random/normal_distribution.hpp and
# exponential_distribution.hpp, unchanged since Boost 1.64), copied digit for digit: the
# decimal literals round to the same doubles in Python as in C++.
# ---------------------------------------------------------------------------------------
_NORMAL_TABLE_X = (
    3.7130862467403632609, 3.4426198558966521214, 3.2230849845786185446, 3.0832288582142137009,
    2.9786962526450169606, 2.8943440070186706210, 2.8231253505459664379, 2.7611693723841538514,
    2.7061135731187223371, 2.6564064112581924999, 2.6109722484286132035, 2.5690336259216391328,
    2.5300096723854666170, 2.4934545220919507609, 2.4590181774083500943, 2.4264206455302115930,
    2.3954342780074673425, 2.3658713701139875435, 2.3375752413355307354, 2.3104136836950021558,
    2.2842740596736568056, 2.2590595738653295251, 2.2346863955870569803, 2.2110814088747278106,
    2.1881804320720206093, 2.1659267937448407377, 2.1442701823562613518, 2.1231657086697899595,
    2.1025731351849988838, 2.0824562379877246441, 2.0627822745039633575, 2.0435215366506694976,
    2.0246469733729338782, 2.0061338699589668403, 1.9879595741230607243, 1.9701032608497132242,
    1.9525457295488889058, 1.9352692282919002011, 1.9182573008597320303, 1.9014946531003176140,
    1.8849670357028692380, 1.8686611409895420085, 1.8525645117230870617, 1.8366654602533840447,
    1.8209529965910050740, 1.8054167642140487420, 1.7900469825946189862, 1.7748343955807692457,
    1.7597702248942318749, 1.7448461281083765085, 1.7300541605582435350, 1.7153867407081165482,
    1.7008366185643009437, 1.6863968467734863258, 1.6720607540918522072, 1.6578219209482075462,
    1.6436741568569826489, 1.6296114794646783962, 1.6156280950371329644, 1.6017183802152770587,
    1.5878768648844007019, 1.5740982160167497219, 1.5603772223598406870, 1.5467087798535034608,
    1.5330878776675560787, 1.5195095847593707806, 1.5059690368565502602, 1.4924614237746154081,
    1.4789819769830978546, 1.4655259573357946276, 1.4520886428822164926, 1.4386653166774613138,
    1.4252512545068615734, 1.4118417124397602509, 1.3984319141236063517, 1.3850170377251486449,
    1.3715922024197322698, 1.3581524543224228739, 1.3446927517457130432, 1.3312079496576765017,
    1.3176927832013429910, 1.3041418501204215390, 1.2905495919178731508, 1.2769102735516997175,
    1.2632179614460282310, 1.2494664995643337480, 1.2356494832544811749, 1.2217602305309625678,
    1.2077917504067576028, 1.1937367078237721994, 1.1795873846544607035, 1.1653356361550469083,
    1.1509728421389760651, 1.1364898520030755352, 1.1218769225722540661, 1.1071236475235353980,
    1.0922188768965537614, 1.0771506248819376573, 1.0619059636836193998, 1.0464709007525802629,
    1.0308302360564555907, 1.0149673952392994716, 0.99886423348064351303,
    0.98250080350276038481, 0.96585507938813059489, 0.94890262549791195381,
    0.93161619660135381056, 0.91396525100880177644, 0.89591535256623852894,
    0.87742742909771569142, 0.85845684317805086354, 0.83895221428120745572,
    0.81885390668331772331, 0.79809206062627480454, 0.77658398787614838598,
    0.75423066443451007146, 0.73091191062188128150, 0.70647961131360803456,
    0.68074791864590421664, 0.65347863871504238702, 0.62435859730908822111,
    0.59296294244197797913, 0.55869217837551797140, 0.52065603872514491759,
    0.47743783725378787681, 0.42654798630330512490, 0.36287143102841830424,
    0.27232086470466385065, 0,
)

_NORMAL_TABLE_Y = (
    0, 0.0026696290839025035092, 0.0055489952208164705392, 0.0086244844129304709682,
    0.011839478657982313715, 0.015167298010672042468, 0.018592102737165812650,
    0.022103304616111592615, 0.025693291936149616572, 0.029356317440253829618,
    0.033087886146505155566, 0.036884388786968774128, 0.040742868074790604632,
    0.044660862200872429800, 0.048636295860284051878, 0.052667401903503169793,
    0.056752663481538584188, 0.060890770348566375972, 0.065080585213631873753,
    0.069321117394180252601, 0.073611501884754893389, 0.077950982514654714188,
    0.082338898242957408243, 0.086774671895542968998, 0.091257800827634710201,
    0.09578784912257815216, 0.10036444102954554013, 0.10498725541035453978,
    0.10965602101581776100, 0.11437051244988827452, 0.11913054670871858767,
    0.12393598020398174246, 0.12878670619710396109, 0.13368265258464764118,
    0.13862377998585103702, 0.14361008009193299469, 0.14864157424369696566,
    0.15371831220958657066, 0.15884037114093507813, 0.16400785468492774791,
    0.16922089223892475176, 0.17447963833240232295, 0.17978427212496211424,
    0.18513499701071343216, 0.19053204032091372112, 0.19597565311811041399,
    0.20146611007620324118, 0.20700370944187380064, 0.21258877307373610060,
    0.21822164655637059599, 0.22390269938713388747, 0.22963232523430270355,
    0.23541094226572765600, 0.24123899354775131610, 0.24711694751469673582,
    0.25304529850976585934, 0.25902456739871074263, 0.26505530225816194029,
    0.27113807914102527343, 0.27727350292189771153, 0.28346220822601251779,
    0.28970486044581049771, 0.29600215684985583659, 0.30235482778947976274,
    0.30876363800925192282, 0.31522938806815752222, 0.32175291587920862031,
    0.32833509837615239609, 0.33497685331697116147, 0.34167914123501368412,
    0.34844296754987246935, 0.35526938485154714435, 0.36215949537303321162,
    0.36911445366827513952, 0.37613546951445442947, 0.38322381105988364587,
    0.39038080824138948916, 0.39760785649804255208, 0.40490642081148835099,
    0.41227804010702462062, 0.41972433205403823467, 0.42724699830956239880,
    0.43484783025466189638, 0.44252871528024661483, 0.45029164368692696086,
    0.45813871627287196483, 0.46607215269457097924, 0.47409430069824960453,
    0.48220764633483869062, 0.49041482528932163741, 0.49871863547658432422,
    0.50712205108130458951, 0.51562823824987205196, 0.52424057267899279809,
    0.53296265938998758838, 0.54179835503172412311, 0.55075179312105527738,
    0.55982741271069481791, 0.56902999107472161225, 0.57836468112670231279,
    0.58783705444182052571, 0.59745315095181228217, 0.60721953663260488551,
    0.61714337082656248870, 0.62723248525781456578, 0.63749547734314487428,
    0.64794182111855080873, 0.65858200005865368016, 0.66942766735770616891,
    0.68049184100641433355, 0.69178914344603585279, 0.70333609902581741633,
    0.71515150742047704368, 0.72725691835450587793, 0.73967724368333814856,
    0.75244155918570380145, 0.76558417390923599480, 0.77914608594170316563,
    0.79317701178385921053, 0.80773829469612111340, 0.82290721139526200050,
    0.83878360531064722379, 0.85550060788506428418, 0.87324304892685358879,
    0.89228165080230272301, 0.91304364799203805999, 0.93628268170837107547,
    0.96359969315576759960, 1,
)

_EXP_TABLE_X = (
    8.6971174701310497140, 7.6971174701310497140, 6.9410336293772123602, 6.4783784938325698538,
    6.1441646657724730491, 5.8821443157953997963, 5.6664101674540337371, 5.4828906275260628694,
    5.3230905057543986131, 5.1814872813015010392, 5.0542884899813047117, 4.9387770859012514838,
    4.8329397410251125881, 4.7352429966017412526, 4.6444918854200854873, 4.5597370617073515513,
    4.4802117465284221949, 4.4052876934735729805, 4.3344436803172730116, 4.2672424802773661873,
    4.2033137137351843802, 4.1423408656640511251, 4.0840513104082974638, 4.0282085446479365106,
    3.9746060666737884793, 3.9230625001354895926, 3.8734176703995089983, 3.8255294185223367372,
    3.7792709924116678992, 3.7345288940397975350, 3.6912010902374189454, 3.6491955157608538478,
    3.6084288131289096339, 3.5688252656483374051, 3.5303158891293438633, 3.4928376547740601814,
    3.4563328211327607625, 3.4207483572511205323, 3.3860354424603017887, 3.3521490309001100106,
    3.3190474709707487166, 3.2866921715990692095, 3.2550473085704501813, 3.2240795652862645207,
    3.1937579032122407483, 3.1640533580259734580, 3.1349388580844407393, 3.1063890623398246660,
    3.0783802152540905188, 3.0508900166154554479, 3.0238975044556767713, 2.9973829495161306949,
    2.9713277599210896472, 2.9457143948950456386, 2.9205262865127406647, 2.8957477686001416838,
    2.8713640120155362592, 2.8473609656351888266, 2.8237253024500354905, 2.8004443702507381944,
    2.7775061464397572041, 2.7548991965623453650, 2.7326126361947007411, 2.7106360958679293686,
    2.6889596887418041593, 2.6675739807732670816, 2.6464699631518093905, 2.6256390267977886123,
    2.6050729387408355373, 2.5847638202141406911, 2.5647041263169053687, 2.5448866271118700928,
    2.5253043900378279427, 2.5059507635285939648, 2.4868193617402096807, 2.4679040502973649846,
    2.4491989329782498908, 2.4306983392644199088, 2.4123968126888708336, 2.3942890999214583288,
    2.3763701405361408194, 2.3586350574093374601, 2.3410791477030346875, 2.3236978743901964559,
    2.3064868582835798692, 2.2894418705322694265, 2.2725588255531546952, 2.2558337743672190441,
    2.2392628983129087111, 2.2228425031110364013, 2.2065690132576635755, 2.1904389667232199235,
    2.1744490099377744673, 2.1585958930438856781, 2.1428764653998416425, 2.1272876713173679737,
    2.1118265460190418108, 2.0964902118017147637, 2.0812758743932248696, 2.0661808194905755036,
    2.0512024094685848641, 2.0363380802487695916, 2.0215853383189260770, 2.0069417578945183144,
    1.9924049782135764992, 1.9779727009573602295, 1.9636426877895480401, 1.9494127580071845659,
    1.9352807862970511135, 1.9212447005915276767, 1.9073024800183871196, 1.8934521529393077332,
    1.8796917950722108462, 1.8660195276928275962, 1.8524335159111751661, 1.8389319670188793980,
    1.8255131289035192212, 1.8121752885263901413, 1.7989167704602903934, 1.7857359354841254047,
    1.7726311792313049959, 1.7596009308890742369, 1.7466436519460739352, 1.7337578349855711926,
    1.7209420025219350428, 1.7081947058780575683, 1.6955145241015377061, 1.6829000629175537544,
    1.6703499537164519163, 1.6578628525741725325, 1.6454374393037234057, 1.6330724165359912048,
    1.6207665088282577216, 1.6085184617988580769, 1.5963270412864831349, 1.5841910325326886695,
    1.5721092393862294810, 1.5600804835278879161, 1.5481036037145133070, 1.5361774550410318943,
    1.5243009082192260050, 1.5124728488721167573, 1.5006921768428164936, 1.4889578055167456003,
    1.4772686611561334579, 1.4656236822457450411, 1.4540218188487932264, 1.4424620319720121876,
    1.4309432929388794104, 1.4194645827699828254, 1.4080248915695353509, 1.3966232179170417110,
    1.3852585682631217189, 1.3739299563284902176, 1.3626364025050864742, 1.3513769332583349176,
    1.3401505805295045843, 1.3289563811371163220, 1.3177933761763245480, 1.3066606104151739482,
    1.2955571316866007210, 1.2844819902750125450, 1.2734342382962410994, 1.2624129290696153434,
    1.2514171164808525098, 1.2404458543344064544, 1.2294981956938491599, 1.2185731922087903071,
    1.2076698934267612830, 1.1967873460884031665, 1.1859245934042023557, 1.1750806743109117687,
    1.1642546227056790397, 1.1534454666557748056, 1.1426522275816728928, 1.1318739194110786733,
    1.1211095477013306083, 1.1103581087274114281, 1.0996185885325976575, 1.0888899619385472598,
    1.0781711915113727024, 1.0674612264799681530, 1.0567590016025518414, 1.0460634359770445503,
    1.0353734317905289496, 1.0246878730026178052, 1.0140056239570971074, 1.0033255279156973717,
    0.99264640550727647009, 0.98196705308506317914, 0.97128624098390397896,
    0.96060271166866709917, 0.94991517776407659940, 0.93922231995526297952,
    0.92852278474721113999, 0.91781518207004493915, 0.90709808271569100600,
    0.89637001558989069006, 0.88562946476175228052, 0.87487486629102585352,
    0.86410460481100519511, 0.85331700984237406386, 0.84251035181036928333,
    0.83168283773427388393, 0.82083260655441252290, 0.80995772405741906620,
    0.79905617735548788109, 0.78812586886949324977, 0.77716460975913043936,
    0.76617011273543541328, 0.75513998418198289808, 0.74407171550050873971,
    0.73296267358436604916, 0.72181009030875689912, 0.71061105090965570413,
    0.69936248110323266174, 0.68806113277374858613, 0.67670356802952337911,
    0.66528614139267855405, 0.65380497984766565353, 0.64225596042453703448,
    0.63063468493349100113, 0.61893645139487678178, 0.60715622162030085137,
    0.59528858429150359384, 0.58332771274877027785, 0.57126731653258903915,
    0.55910058551154127652, 0.54682012516331112550, 0.53441788123716615385,
    0.52188505159213564105, 0.50921198244365495319, 0.49638804551867159754,
    0.48340149165346224782, 0.47023927508216945338, 0.45688684093142071279,
    0.44332786607355296305, 0.42954394022541129589, 0.41551416960035700100,
    0.40121467889627836229, 0.38661797794112021568, 0.37169214532991786118,
    0.35639976025839443721, 0.34069648106484979674, 0.32452911701691008547,
    0.30783295467493287307, 0.29052795549123115167, 0.27251318547846547924,
    0.25365836338591284433, 0.23379048305967553619, 0.21267151063096745264,
    0.18995868962243277774, 0.16512762256418831796, 0.13730498094001380420,
    0.10483850756582017915, 0.063852163815003480173, 0,
)

_EXP_TABLE_Y = (
    0, 0.00045413435384149675545, 0.00096726928232717452884, 0.0015362997803015723824,
    0.0021459677437189061793, 0.0027887987935740759640, 0.0034602647778369039855,
    0.0041572951208337952532, 0.0048776559835423925804, 0.0056196422072054831710,
    0.0063819059373191794422, 0.0071633531836349841425, 0.0079630774380170392396,
    0.0087803149858089752347, 0.0096144136425022094101, 0.010464810181029979488,
    0.011331013597834597488, 0.012212592426255380661, 0.013109164931254991070,
    0.014020391403181937334, 0.014945968011691148079, 0.015885621839973162490,
    0.016839106826039946359, 0.017806200410911360563, 0.018786700744696029497,
    0.019780424338009741737, 0.020787204072578117603, 0.021806887504283582125,
    0.022839335406385238829, 0.023884420511558170348, 0.024942026419731782971,
    0.026012046645134218076, 0.027094383780955798424, 0.028188948763978634421,
    0.029295660224637394015, 0.030414443910466605492, 0.031545232172893605499,
    0.032687963508959533317, 0.033842582150874329031, 0.035009037697397411067,
    0.036187284781931419754, 0.037377282772959360128, 0.038578995503074859626,
    0.039792391023374122670, 0.041017441380414820816, 0.042254122413316231413,
    0.043502413568888183301, 0.044762297732943280694, 0.046033761076175166762,
    0.047316792913181548703, 0.048611385573379494401, 0.049917534282706374944,
    0.051235237055126279830, 0.052564494593071689595, 0.053905310196046085104,
    0.055257689676697038322, 0.056621641283742874438, 0.057997175631200659098,
    0.059384305633420264487, 0.060783046445479636051, 0.062193415408540996150,
    0.063615431999807331076, 0.065049117786753755036, 0.066494496385339779043,
    0.067951593421936607770, 0.069420436498728751675, 0.070901055162371828426,
    0.072393480875708743023, 0.073897746992364746308, 0.075413888734058408453,
    0.076941943170480510100, 0.078481949201606426042, 0.080033947542319910023,
    0.081597980709237420930, 0.083174093009632380354, 0.084762330532368125386,
    0.086362741140756912277, 0.087975374467270219300, 0.089600281910032864534,
    0.091237516631040162057, 0.092887133556043546523, 0.094549189376055853718,
    0.096223742550432800103, 0.097910853311492199618, 0.099610583670637128826,
    0.10132299742595363588, 0.10304816017125771553, 0.10478613930657016928,
    0.10653700405000166218, 0.10830082545103379867, 0.11007767640518539026,
    0.11186763167005629731, 0.11367076788274431301, 0.11548716357863353664,
    0.11731689921155557057, 0.11916005717532768467, 0.12101672182667483729,
    0.12288697950954513498, 0.12477091858083096578, 0.12666862943751066518,
    0.12858020454522817870, 0.13050573846833078225, 0.13244532790138752023,
    0.13439907170221363078, 0.13636707092642885841, 0.13834942886358021406,
    0.14034625107486244210, 0.14235764543247220043, 0.14438372216063476473,
    0.14642459387834493787, 0.14848037564386679222, 0.15055118500103990354,
    0.15263714202744286154, 0.15473836938446807312, 0.15685499236936522013,
    0.15898713896931420572, 0.16113493991759203183, 0.16329852875190180795,
    0.16547804187493600915, 0.16767361861725019322, 0.16988540130252766513,
    0.17211353531532005700, 0.17435816917135348788, 0.17661945459049489581,
    0.17889754657247831241, 0.18119260347549629488, 0.18350478709776746150,
    0.18583426276219711495, 0.18818119940425430485, 0.19054576966319540013,
    0.19292814997677133873, 0.19532852067956322315, 0.19774706610509886464,
    0.20018397469191127727, 0.20263943909370901930, 0.20511365629383770880,
    0.20760682772422204205, 0.21011915938898825914, 0.21265086199297827522,
    0.21520215107537867786, 0.21777324714870053264, 0.22036437584335949720,
    0.22297576805812018050, 0.22560766011668406495, 0.22826029393071670664,
    0.23093391716962742173, 0.23362878343743333945, 0.23634515245705964715,
    0.23908329026244917002, 0.24184346939887722761, 0.24462596913189210901,
    0.24743107566532763894, 0.25025908236886230967, 0.25311029001562948171,
    0.25598500703041538015, 0.25888354974901621678, 0.26180624268936295243,
    0.26475341883506220209, 0.26772541993204481808, 0.27072259679906003167,
    0.27374530965280298302, 0.27679392844851734458, 0.27986883323697289920,
    0.28297041453878076010, 0.28609907373707684673, 0.28925522348967773308,
    0.29243928816189258772, 0.29565170428126120948, 0.29889292101558177099,
    0.30216340067569352897, 0.30546361924459023541, 0.30879406693456016794,
    0.31215524877417956945, 0.31554768522712893632, 0.31897191284495723773,
    0.32242848495608914289, 0.32591797239355619822, 0.32944096426413633091,
    0.33299806876180896713, 0.33658991402867758144, 0.34021714906678004560,
    0.34388044470450243010, 0.34758049462163698567, 0.35131801643748334681,
    0.35509375286678745925, 0.35890847294874976196, 0.36276297335481777335,
    0.36665807978151414890, 0.37059464843514599421, 0.37457356761590215193,
    0.37859575940958081092, 0.38266218149600982112, 0.38677382908413768115,
    0.39093173698479710717, 0.39513698183329015336, 0.39939068447523107877,
    0.40369401253053026739, 0.40804818315203238238, 0.41245446599716116772,
    0.41691418643300289465, 0.42142872899761659635, 0.42599954114303435739,
    0.43062813728845883923, 0.43531610321563659758, 0.44006510084235387501,
    0.44487687341454851593, 0.44975325116275498919, 0.45469615747461548049,
    0.45970761564213768669, 0.46478975625042618067, 0.46994482528395999841,
    0.47517519303737738299, 0.48048336393045423016, 0.48587198734188493564,
    0.49134386959403255500, 0.49690198724154955294, 0.50254950184134769289,
    0.50828977641064283495, 0.51412639381474855788, 0.52006317736823356823,
    0.52610421398361972602, 0.53225388026304326945, 0.53851687200286186590,
    0.54489823767243963663, 0.55140341654064131685, 0.55803828226258748140,
    0.56480919291240022434, 0.57172304866482579008, 0.57878735860284503057,
    0.58601031847726802755, 0.59340090169173341521, 0.60096896636523224742,
    0.60872538207962206507, 0.61668218091520762326, 0.62485273870366592605,
    0.63325199421436607968, 0.64189671642726607018, 0.65080583341457104881,
    0.66000084107899974178, 0.66950631673192477684, 0.67935057226476538741,
    0.68956649611707798890, 0.70019265508278816709, 0.71127476080507597882,
    0.72286765959357200702, 0.73503809243142351530, 0.74786862198519510742,
    0.76146338884989624862, 0.77595685204011559675, 0.79152763697249565519,
    0.80842165152300838005, 0.82699329664305033399, 0.84778550062398962096,
    0.87170433238120363669, 0.90046992992574643800, 0.93814368086217467916, 1,
)


def _first_at_least(x_of_m, target):
    """Per entry, the smallest m in [0, 2^24] with ``x_of_m(m) >= target`` (2^24 if none).

    ``x_of_m`` is non-decreasing in m (a float32 product of m and a positive constant),
    so a vectorized bisection over all entries at once finds the thresholds exactly.
    """
    lo = np.zeros(target.shape, np.int64)
    hi = np.full(target.shape, 1 << 24, np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        ok = x_of_m(mid) >= target
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid + 1)
    return lo


class _Tables:
    """The ziggurat tables, pre-digested for vectorized use (built once at import)."""

    def __init__(self):
        nx = np.array(_NORMAL_TABLE_X, np.float64)
        ny = np.array(_NORMAL_TABLE_Y, np.float64)
        ex = np.array(_EXP_TABLE_X, np.float64)
        ey = np.array(_EXP_TABLE_Y, np.float64)
        self.nx, self.ny, self.ex, self.ey = nx, ny, ex, ey

        # normal: per strip i (0..127) the float32 constants of Boost's code
        self.nxf = nx.astype(_F32)                           # RealType(table_x[i])
        self.nyf = ny.astype(_F32)                           # RealType(table_y[i])
        self.ndx = (nx[:-1] - nx[1:]).astype(_F32)           # RealType(table_x[i] - table_x[i+1])
        self.ndy = (ny[1:] - ny[:-1]).astype(_F32)           # RealType(table_y[i+1] - table_y[i])
        self.nconvex = nx[:-1] >= 1
        # the slow path's constants, one row per strip: X[i], Y[i], X[i]-X[i+1], Y[i+1]-Y[i]
        self.nslow = np.stack([self.nxf[:128], self.nyf[:128], self.ndx, self.ndy], axis=1)
        # fast path: x = float(m) * 2^-24 * float(X[i]) and accept iff double(x) < X[i+1],
        # i.e. iff m < thr[i] for an integer threshold per strip
        xf = self.nxf[:128]
        nthr = _first_at_least(
            lambda m: ((m.astype(_F32) * _TWO_M24) * xf).astype(np.float64), nx[1:129])
        # indexed by the low byte of the word: sign (bit 0) and strip (bits 1..7)
        i8 = np.arange(256)
        sign = np.where(i8 & 1, _F32(1), _F32(-1))
        # x * sign == float(m) * (sign * X[i] * 2^-24), exactly (scaling by 2^-24 is exact)
        mult = (sign * (xf[i8 >> 1] * _TWO_M24)).astype(_F32)
        # the slow path is taken iff word >= thr[i] * 256 + low byte
        thr = (nthr[i8 >> 1] * 256 + i8).astype(np.uint64)
        self.normal_lut = (mult.view(np.uint32).astype(np.uint64) | (thr << np.uint64(32)))
        self.nthr = nthr
        self.tail_start = self.nxf[1]                        # RealType(table_x[1])

        # exponential (256 strips): accept iff float x < float(X[i+1])
        self.exf = ex.astype(_F32)
        self.eyf = ey.astype(_F32)
        self.edx = (ex[:-1] - ex[1:]).astype(_F32)
        self.edy = (ey[1:] - ey[:-1]).astype(_F32)
        exf = self.exf[:256]
        ethr = _first_at_least(lambda m: (m.astype(_F32) * _TWO_M24) * exf, self.exf[1:257])
        self.emult = (exf * _TWO_M24).astype(_F32)
        self.ethr_word = (ethr * 256 + np.arange(256)).astype(np.uint32)


_T = _Tables()

# scalar copies (numpy float32 scalars) for the rare paths
_NXF = [_F32(v) for v in _T.nxf]
_NYF = [_F32(v) for v in _T.nyf]
_NDX = [_F32(v) for v in _T.ndx]
_NDY = [_F32(v) for v in _T.ndy]
_NX = [float(v) for v in _T.nx]
_EXF = [_F32(v) for v in _T.exf]
_EYF = [_F32(v) for v in _T.eyf]
_EDX = [_F32(v) for v in _T.edx]
_EDY = [_F32(v) for v in _T.edy]
_ONE = _F32(1)
_TWO = _F32(2)
_ZERO = _F32(0)


def _load_libm_expf():
    """The C library's ``expf``, which Boost's ``std::exp(float)`` calls, or None."""
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("m")
        lib = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        fn = lib.expf
        fn.restype = ctypes.c_float
        fn.argtypes = [ctypes.c_float]
        return fn
    except (OSError, AttributeError):
        return None


_LIBM_EXPF = _load_libm_expf()


def _expf1(v):
    """``expf(v)`` as a float32: the C library's when available (glibc's ``expf`` differs
    from the correctly rounded value for about 0.1% of arguments), else exp in double
    rounded once."""
    if _LIBM_EXPF is not None:
        return _F32(_LIBM_EXPF(float(v)))
    return _F32(math.exp(float(v)))


def _y_below_expf(y, v):
    """Boost's ``y < exp(v)`` in float32 for arrays, with ``expf`` as the C library has it.

    exp is taken in double and rounded once; ``expf`` agrees with that or is one ulp
    away, so the comparison can only differ when y is that value or the float below it:
    those few are asked of the C library's ``expf`` itself.
    """
    e = np.exp(v.astype(np.float64)).astype(_F32)
    if _LIBM_EXPF is not None:
        near = np.flatnonzero((y == e) | (y == np.nextafter(e, _F32(-np.inf))))
        for k in near.tolist():
            e[k] = _expf1(v[k])
    return y < e


# --- scalar paths: one attempt at a time, reading words W[p], W[p+1], ... ---------------
# Each returns None when the block W runs out of words (the caller then draws more).

def _scalar_uniform01(W, p):
    """Boost ``uniform_01<float>``: ``float(u) * 2^-32``, drawn again while it is 1."""
    n = len(W)
    while p < n:
        r = _TWO_M32 * W.item(p)                 # float(u) * 2^-32 (int -> float32 rounds)
        p += 1
        if r < _ONE:
            return r, p
    return None


def _scalar_unit_exp(W, p):
    """Boost's ziggurat ``unit_exponential_distribution<float>``: (value, next position)."""
    n = len(W)
    shift = _ZERO
    while True:
        if p >= n:
            return None
        u = W.item(p)
        p += 1
        i = u & 0xFF
        x = (_TWO_M24 * (u >> 8)) * _EXF[i]
        if x < _EXF[i + 1]:
            return shift + x, p
        if i == 0:
            shift = shift + _EXF[1]
            continue
        got = _scalar_uniform01(W, p)
        if got is None:
            return None
        y01, p = got
        y = _EYF[i] + y01 * _EDY[i]
        y_above_ubound = _EDX[i] * y01 - (_EXF[i] - x)
        y_above_lbound = y - (_EYF[i + 1] + (_EXF[i + 1] - x) * _EYF[i + 1])
        if y_above_ubound < 0 and (y_above_lbound < 0 or y < _expf1(-x)):
            return x + shift, p


def _scalar_normal_attempt(W, p):
    """One attempt of Boost's ziggurat ``unit_normal_distribution<float>`` from word p.

    Returns ``(z, q)`` with z the sample (or None if the attempt was rejected) and q the
    position of the next unread word, or None if W ran out of words.
    """
    if p >= len(W):
        return None
    u = W.item(p)
    p += 1
    i = (u & 0xFF) >> 1
    sign = _ONE if u & 1 else -_ONE
    x = (_TWO_M24 * (u >> 8)) * _NXF[i]
    if float(x) < _NX[i + 1]:
        return x * sign, p
    if i == 0:                                    # the tail, beyond X[1]
        t = _T.tail_start
        while True:
            got = _scalar_unit_exp(W, p)
            if got is None:
                return None
            a, p = got
            a = a / t
            got = _scalar_unit_exp(W, p)
            if got is None:
                return None
            b, p = got
            b = b / _ONE
            if _TWO * b > a * a:
                return (a + t) * sign, p
    got = _scalar_uniform01(W, p)
    if got is None:
        return None
    y01, p = got
    y = _NYF[i] + y01 * _NDY[i]
    first = _NDX[i] * y01 - (_NXF[i] - x)
    second = y - (_NYF[i] + (_NXF[i] - x) * _NYF[i] * _NXF[i])
    if _NX[i] >= 1:
        y_above_ubound, y_above_lbound = first, second
    else:
        y_above_ubound, y_above_lbound = second, first
    if y_above_ubound < 0 and (y_above_lbound < 0 or y < _expf1(-(x * x / _TWO))):
        return x * sign, p
    return None, p


def _check_count(n):
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"The number of samples must be at least 0, not {n}.")
    return n


def _finite32(name, v):
    f = _F32(v)
    if not np.isfinite(f):
        raise ValueError(f"The {name} of a random fill must be a finite float32 value, not {v!r}.")
    return f


class CaffeRNG:
    """Caffe's random stream, bit for bit: ``boost::mt19937`` plus Boost's distributions.

    ``CaffeRNG(seed)`` starts where ``caffe.set_random_seed(seed)`` leaves Caffe's global
    engine.  Each method consumes exactly the words Caffe would, so a sequence of calls
    (one per filled blob, in Caffe's order) gives Caffe's fills and leaves the stream
    where Caffe leaves it.  Words drawn ahead of need are kept and served first, so
    nothing is lost between calls.

    Args:
        seed: an unsigned 32-bit int (Caffe's seed type); ``None`` picks one at random
            (as Caffe does without ``set_random_seed``), kept in ``.seed``.
    """

    kind = "caffe"
    #: words per uniform/bernoulli chunk, and the largest gaussian block (cache-sized)
    chunk = 1 << 17

    def __init__(self, seed=None):
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        try:
            seed = operator.index(seed)
        except TypeError:
            raise TypeError(f"A Caffe seed must be an int, not {type(seed).__name__}.") from None
        if not 0 <= seed < 2 ** 32:
            raise ValueError(f"A Caffe seed is an unsigned 32-bit value; {seed} is out of range.")
        self.seed = seed
        bg = np.random.MT19937()
        bg.state = np.random.RandomState(seed).get_state(legacy=False)
        self._set_bitgen(bg, 0)

    def _set_bitgen(self, bg, consumed, pending=None):
        self._bg = bg
        self._gen = np.random.Generator(bg)
        # words drawn from bg but not consumed yet: always the last ones bg produced
        self._pending = np.empty(0, np.uint32) if pending is None else np.array(pending, np.uint32)
        self._consumed = consumed                 # words consumed since seeding
        self._ws = None                           # scratch arrays of the gaussian parser

    # --- words ---------------------------------------------------------------------------
    def _raw(self, n):
        """n new words straight from the engine (the same words as ``random_raw``: the
        full-range uint32 path of ``integers`` returns MT19937's raw output)."""
        if n < 4096:                              # integers() has a larger fixed cost
            return self._bg.random_raw(n).astype(np.uint32)
        return self._gen.integers(0, 1 << 32, size=n, dtype=np.uint32)

    def _take(self, n):
        """The next n words of the stream (to read, not to keep: may be a view)."""
        p = self._pending.size
        if n <= p:
            w = self._pending[:n]
            self._pending = self._pending[n:]
        elif p == 0:
            w = self._raw(n)
        else:
            w = np.concatenate((self._pending, self._raw(n - p)))
            self._pending = np.empty(0, np.uint32)
        self._consumed += n
        return w

    def _unread(self, w):
        """Give back the last words taken (they will be served again, in order)."""
        if w.size:
            self._pending = np.concatenate((w, self._pending)) if self._pending.size else w.copy()
            self._consumed -= w.size

    @property
    def consumed(self):
        """The number of 32-bit words consumed since seeding (Caffe's stream position)."""
        return self._consumed

    def words(self, n):
        """The next ``n`` raw 32-bit words of the engine, as uint32."""
        return np.array(self._take(_check_count(n)), dtype=np.uint32)

    def get_state(self):
        """The stream's position, for :meth:`set_state`: the engine's numpy MT19937 state,
        the words it produced that are not consumed yet, and the words consumed so far."""
        return {"mt19937": self._bg.state, "pending": self._pending.copy(),
                "consumed": self._consumed}

    def set_state(self, state):
        """Return to a position saved by :meth:`get_state`."""
        bg = np.random.MT19937()
        bg.state = state["mt19937"]
        self._set_bitgen(bg, int(state.get("consumed", 0)), state.get("pending"))

    def copy(self):
        """An independent stream at the same position."""
        other = CaffeRNG.__new__(CaffeRNG)
        other.seed = self.seed
        other.set_state(self.get_state())
        return other

    def __repr__(self):
        return f"CaffeRNG(seed={self.seed}, consumed={self._consumed})"

    # --- uniform -------------------------------------------------------------------------
    def uniform(self, n, a=0.0, b=1.0):
        """``caffe_rng_uniform(n, a, b)``: n float32 values in ``[a, nextafterf(b))``.

        Per word u: ``r = (float(u) / 2^32) * (b' - a) + a`` (float32, two roundings),
        redrawn while ``r >= b'``; for ranges wider than FLT_MAX, Boost samples the
        halved range and doubles.  Rejections (a word near 2^32 whose r rounds up to b')
        are dropped and their replacements drawn at the end, which is what Boost's
        per-sample loop amounts to.
        """
        n = _check_count(n)
        a = _finite32("lower bound", a)
        b = _finite32("upper bound", b)
        if not a <= b:
            raise ValueError(f"A uniform fill needs min <= max (Caffe CHECKs it), got {a} > {b}.")
        bp = np.nextafter(b, _FLT_MAX)
        lo, hi, double = a, bp, False
        if bp / _TWO - a / _TWO > _FLT_MAX / _TWO:
            lo, hi, double = a / _TWO, bp / _TWO, True
        width = _F32(hi - lo)
        # float(u) * 2^-32 * width == float(u) * (width * 2^-32) exactly while no product
        # is subnormal (float(u) >= 1 and width * 2^-32 >= 2^-126)
        fused = width >= _F32(2.0 ** -94)
        k = _F32(width * _TWO_M32)
        out = np.empty(n, _F32)
        pos = 0
        while pos < n:
            c = min(self.chunk, n - pos)
            w = self._take(c)
            o = out[pos:pos + c]
            if fused:
                np.multiply(w, k, out=o, dtype=_F32)
            else:
                np.multiply(w, _TWO_M32, out=o, dtype=_F32)
                np.multiply(o, width, out=o)
            np.add(o, lo, out=o)
            if o.max() >= hi:                      # rare: drop the rejected words
                good = o[o < hi]
                o[:good.size] = good
                c = good.size
            if double:
                np.multiply(o[:c], _TWO, out=o[:c])
            pos += c
        return out

    # --- bernoulli -----------------------------------------------------------------------
    def bernoulli(self, n, p):
        """``caffe_rng_bernoulli(n, p)``: a bool array; ``float(u) <= p * 2^32`` (float32).

        ``p == 0`` gives all False without drawing, as Boost does.
        """
        n = _check_count(n)
        p = _F32(p)
        if not (p >= 0 and p <= 1):
            raise ValueError(f"A Bernoulli probability must lie in [0, 1] (Caffe CHECKs it), not {p}.")
        out = np.zeros(n, bool)
        if p == 0:
            return out
        t = _F32(p * _TWO_32F)
        # float(u) <= t  <=>  u <= umax (float(u) is non-decreasing in u)
        lo, hi = 0, (1 << 32) - 1
        if _F32(hi) <= t:
            umax = hi
        else:
            while lo < hi:                         # largest u with float(u) <= t
                mid = (lo + hi + 1) // 2
                if _F32(mid) <= t:
                    lo = mid
                else:
                    hi = mid - 1
            umax = lo                              # >= 0: float(0) <= t as p > 0
        pos = 0
        while pos < n:
            c = min(self.chunk, n - pos)
            w = self._take(c)
            np.less_equal(w, np.uint32(umax), out=out[pos:pos + c])
            pos += c
        return out

    # --- gaussian ------------------------------------------------------------------------
    def gaussian(self, n, mu=0.0, sigma=1.0):
        """``caffe_rng_gaussian(n, mu, sigma)``: n float32 values ``z * sigma + mu``.

        z comes from Boost's ziggurat ``normal_distribution<float>``, parsed from blocks of
        words without a per-sample loop (see :func:`_gauss_block`).
        """
        n = _check_count(n)
        mu = _F32(mu)
        sigma = _F32(sigma)
        if not sigma > 0:
            raise ValueError(f"A Gaussian fill needs std > 0 (Caffe CHECKs it), got {sigma}.")
        out = np.empty(n, _F32)
        pos = 0
        grow = 0
        while pos < n:
            need = n - pos
            size = max(min(self.chunk, need + (need >> 4) + 64), grow)
            w = self._take(size)
            if self._ws is None or self._ws.capacity < size:
                self._ws = _Workspace(max(size, min(self.chunk, 4096)))
            z, used = _gauss_block(w, need, self._ws)
            self._unread(w[used:])
            k = z.size
            if k:
                o = out[pos:pos + k]
                np.multiply(z, sigma, out=o)
                np.add(o, mu, out=o)
                pos += k
            grow = 0 if used else 2 * size         # an attempt longer than the block
        return out


class _Workspace:
    """Scratch arrays for :func:`_gauss_block`, reused from block to block (fresh
    allocations of this size would cost page faults every time)."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.idx = np.empty(capacity, np.intp)
        self.lut = np.empty(capacity, np.uint64)
        self.hi = np.empty(capacity, np.uint32)
        self.vals = np.empty(capacity, _F32)
        self.slow = np.empty(capacity, bool)
        self.keep = np.empty(capacity, bool)


def _gauss_block(W, need, ws):
    """Parse a block of words into unit-normal samples: ``(z, used)``.

    Returns at most ``need`` samples, in order, and the number of words they consumed; the
    words from ``used`` on are left unconsumed.

    The attempts form a chain: an attempt starting at word p takes 1 word if its fast test
    passes (about 97%), 2 words on the slow path of strips 1..127 (p+1 is ``y01``), and 3 or
    more for the tail (strip 0) or when ``y01`` must be redrawn.  Let s_k be the sorted slow
    positions and len_k their word counts.  A slow position starts an attempt unless a
    slow attempt before it covers it (s_j + len_j > s_k, j visited).  So: a slow position no
    earlier slow word can reach is visited; one only its predecessor can reach is visited
    iff the predecessor is not (runs of consecutive slow words alternate); the few others
    (near tails and redraws) are resolved one by one.  Each visited fast word and each
    accepted slow attempt gives one sample, ``x * sign`` (the tail's value for the tail),
    in word order.  An attempt needing words past the block end stops the parse there.
    """
    L = W.size
    T = _T
    i8 = np.bitwise_and(W, 0xFF, out=ws.idx[:L])            # intp: take() is slow otherwise
    lut = T.normal_lut.take(i8, mode="clip", out=ws.lut[:L])
    vals = np.multiply(np.right_shift(W, 8, out=ws.hi[:L]), lut.view(_F32)[0::2],
                       out=ws.vals[:L], dtype=_F32)
    slow = np.greater_equal(W, lut.view(np.uint32)[1::2], out=ws.slow[:L])
    S = np.flatnonzero(slow)
    K = S.size
    if K == 0:
        used = min(L, need)
        return vals[:used].copy(), used

    strip = i8[S] >> 1
    tail = strip == 0
    lens = np.full(K, 2, np.int64)

    # -- strips 1..127: y01 from the next word, then the strip's bound tests (evaluated for
    #    all slow words; tails and redraws are overwritten below)
    K1 = K if S[-1] + 1 < L else K - 1
    y01 = np.full(K, 2, _F32)
    np.multiply(W[S[:K1] + 1], _TWO_M32, out=y01[:K1], dtype=_F32)
    special = (y01 >= _ONE) & ~tail            # y01 == 1 (Boost redraws it) or past the end
    c = T.nslow[strip]                          # per-strip float32 constants
    xi, yi, dx, dy = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    x = np.abs(vals[S])
    y = yi + y01 * dy
    xd = xi - x
    first = dx * y01 - xd
    second = y - (yi + xd * yi * xi)
    # Boost: accept iff ub < 0 and (lb < 0 or y < f(x)), with (ub, lb) = (first, second)
    # for convex strips (X[i] >= 1) and (second, first) otherwise
    fneg = first < 0
    sneg = second < 0
    acc = fneg & sneg
    between = np.flatnonzero((fneg ^ sneg) & (fneg == T.nconvex[strip]))
    if between.size:
        xb = x[between]
        acc[between] = _y_below_expf(y[between], -(xb * xb / _TWO))

    # -- strip 0: the tail; the common case takes two fast exponential draws
    tl = np.flatnonzero(tail)
    if tl.size:
        acc[tl] = False
        far = S[tl] + 2 >= L
        special[tl[far]] = True
        tl = tl[~far]
        p = S[tl]
        w1, w2 = W[p + 1], W[p + 2]
        e1, e2 = np.bitwise_and(w1, 0xFF), np.bitwise_and(w2, 0xFF)
        fast = (w1 < T.ethr_word[e1]) & (w2 < T.ethr_word[e2])
        a = np.multiply(np.right_shift(w1, 8), T.emult[e1], dtype=_F32) / T.tail_start
        b = np.multiply(np.right_shift(w2, 8), T.emult[e2], dtype=_F32)
        ok = fast & (_TWO * b > a * a)
        sign = np.where(W[p] & 1, _ONE, -_ONE).astype(_F32)
        vals[p[ok]] = ((a + T.tail_start) * sign)[ok]
        lens[tl[ok]] = 3
        acc[tl[ok]] = True
        special[tl[~ok]] = True

    # -- the rest one attempt at a time (a few per hundred thousand words)
    big = L + 1
    for k in np.flatnonzero(special).tolist():
        p = int(S[k])
        got = _scalar_normal_attempt(W, p)
        if got is None:
            lens[k] = big                           # needs words past the block
            acc[k] = False
        else:
            z, q = got
            lens[k] = q - p
            acc[k] = z is not None
            if z is not None:
                vals[p] = z

    # -- which slow positions start an attempt
    reach = S + lens
    pm = np.maximum.accumulate(reach)
    prev = np.empty(K, np.int64)                    # max reach of the elements before k
    prev[0] = -1
    prev[1:] = pm[:-1]
    vis = S >= prev                                 # nothing earlier reaches: visited
    if not vis.all():
        prev2 = np.empty(K, np.int64)               # ... before k-1
        prev2[:2] = -1
        prev2[2:] = pm[:-2]
        simple = ~vis & (prev2 <= S)                # only k-1 reaches k: alternate
        ar = np.arange(K)
        head = np.maximum.accumulate(np.where(simple, 0, ar))
        for k in np.flatnonzero(~vis & ~simple).tolist():
            sk = int(S[k])
            covered = False
            j = k - 1
            while j >= 0:
                h = int(head[j])
                vj = bool(vis[h]) ^ bool((j - h) & 1) if simple[j] else bool(vis[j])
                if vj and int(reach[j]) > sk:
                    covered = True
                    break
                if j == 0 or int(pm[j - 1]) <= sk:
                    break
                j -= 1
            vis[k] = not covered
        hs = head[simple]
        vis[simple] = vis[hs] ^ (((ar[simple] - hs) & 1) == 1)

    used = L
    cut = np.flatnonzero(vis & (lens >= big))
    if cut.size:
        used = int(S[cut[0]])
        vis[cut[0]:] = False
    keep = ws.keep[:L]
    keep.fill(True)
    vS, vlen = S[vis], lens[vis]
    keep[vS[~acc[vis]]] = False
    j = 1
    while vS.size:
        keep[vS + j] = False
        j += 1
        more = vlen > j
        vS, vlen = vS[more], vlen[more]
    if used < L:
        keep[used:] = False
    count = int(np.count_nonzero(keep))
    if count >= need:
        last = int(np.flatnonzero(keep)[need - 1])
        k = int(np.searchsorted(S, last))
        used = last + (int(lens[k]) if k < K and S[k] == last else 1)
        keep[last + 1:] = False
    return vals[keep], used


class FastRNG:
    """A fast stream with CaffeRNG's methods and distributions, drawn from numpy.

    Not Caffe's numbers: uniform on ``[a, b)``, Gaussian, Bernoulli from a numpy
    ``Generator`` (PCG64 unless one is passed in), float32 throughout, reproducible for a
    given seed.

    Args:
        seed: ``None`` (fresh entropy), an int or ``SeedSequence`` (a new PCG64
            generator), a ``BitGenerator`` or a ``Generator`` (used as is, shared).
    """

    kind = "fast"
    chunk = 1 << 17

    def __init__(self, seed=None):
        if isinstance(seed, np.random.Generator):
            self._gen = seed
            self.seed = None
        else:
            if isinstance(seed, (bool, np.bool_)) or not (
                    seed is None or isinstance(seed, (int, np.integer, np.random.SeedSequence,
                                                      np.random.BitGenerator))):
                raise TypeError("A fast stream is seeded with None, an int, a SeedSequence, a "
                                f"BitGenerator or a Generator, not {type(seed).__name__}.")
            if seed is None:  # pick a seed that can be reported and used again
                seed = int(np.random.SeedSequence().generate_state(1)[0])
            self._gen = np.random.default_rng(seed)
            self.seed = int(seed) if isinstance(seed, (int, np.integer)) else None

    @property
    def generator(self):
        """The numpy ``Generator`` behind the stream."""
        return self._gen

    def __repr__(self):
        return f"FastRNG(seed={self.seed})" if self.seed is not None else "FastRNG()"

    def words(self, n):
        """``n`` uniformly random 32-bit words, as uint32."""
        return self._gen.integers(0, 1 << 32, size=_check_count(n), dtype=np.uint32)

    def uniform(self, n, a=0.0, b=1.0):
        """n float32 values uniform on ``[a, b)`` (all equal to a when ``a == b``)."""
        n = _check_count(n)
        a = _finite32("lower bound", a)
        b = _finite32("upper bound", b)
        if not a <= b:
            raise ValueError(f"A uniform fill needs min <= max, got {a} > {b}.")
        out = np.empty(n, _F32)
        if a == b:
            out.fill(a)
            return out
        with np.errstate(over="ignore"):
            width = _F32(b - a)
        wide = not np.isfinite(width)             # the range overflows float32
        if wide:
            width, base = _F32(b / _TWO - a / _TWO), _F32(a / _TWO)
        below_b = np.nextafter(b, -np.inf, dtype=_F32)
        for pos in range(0, n, self.chunk):       # cache-sized pieces: one trip to memory
            o = out[pos:pos + self.chunk]
            self._gen.random(dtype=_F32, out=o)
            o *= width
            if wide:
                o += base
                o *= _TWO
            else:
                o += a
            np.minimum(o, below_b, out=o)         # rounding can land on b: keep [a, b)
        return out

    def gaussian(self, n, mu=0.0, sigma=1.0):
        """n float32 values from N(mu, sigma^2) (numpy's float32 ziggurat)."""
        n = _check_count(n)
        mu = _F32(mu)
        sigma = _F32(sigma)
        if not sigma > 0:
            raise ValueError(f"A Gaussian fill needs std > 0, got {sigma}.")
        out = np.empty(n, _F32)
        for pos in range(0, n, self.chunk):
            o = out[pos:pos + self.chunk]
            self._gen.standard_normal(dtype=_F32, out=o)
            if sigma != 1:
                o *= sigma
            if mu != 0:
                o += mu
        return out

    def bernoulli(self, n, p):
        """A bool array, each True with probability p (float32 resolution)."""
        n = _check_count(n)
        p = _F32(p)
        if not (p >= 0 and p <= 1):
            raise ValueError(f"A Bernoulli probability must lie in [0, 1], not {p}.")
        out = np.zeros(n, bool)
        if p == 0:
            return out
        buf = np.empty(min(n, self.chunk), _F32)
        for pos in range(0, n, self.chunk):
            c = min(self.chunk, n - pos)
            r = buf[:c]
            self._gen.random(dtype=_F32, out=r)
            np.less(r, p, out=out[pos:pos + c])
        return out


def make_rng(rng=None, kind="fast"):
    """A random stream from ``rng``.

    Args:
        rng: ``None`` (a fresh stream of ``kind``), an int seed (a stream of ``kind``), a
            numpy ``Generator`` / ``BitGenerator`` / ``SeedSequence`` (a :class:`FastRNG`
            over it), or an existing stream (:class:`CaffeRNG`, :class:`FastRNG`, or any
            object with ``uniform``, ``gaussian`` and ``bernoulli`` methods), returned as is.
        kind: ``"fast"`` or ``"caffe"``: which stream ``None`` or a seed makes.
    """
    if kind not in RNG_KINDS:
        raise ValueError(f"The stream kind must be one of {', '.join(map(repr, RNG_KINDS))}, not {kind!r}.")
    if isinstance(rng, (CaffeRNG, FastRNG)):
        return rng
    if isinstance(rng, (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence)):
        if kind == "caffe":
            raise ValueError("Caffe's stream is seeded with an unsigned 32-bit int, not a numpy "
                             f"{type(rng).__name__}.")
        return FastRNG(rng)
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_))):
        return CaffeRNG(rng) if kind == "caffe" else FastRNG(rng)
    if all(callable(getattr(rng, m, None)) for m in ("uniform", "gaussian", "bernoulli")):
        return rng
    raise TypeError("rng must be None, an int seed, a numpy Generator, a FastRNG or a CaffeRNG, "
                    f"not {type(rng).__name__}.")
