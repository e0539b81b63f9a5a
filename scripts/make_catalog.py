"""Build the offline shopping catalog: `serve_app/data/catalog/catalog.json` and one PNG per product.

The catalog is the default shopping provider when no Naver keys are set, so the desk-makeover
flow returns realistic recommendations offline. Titles are invented and brand-neutral; prices
are plausible KRW amounts. Images are small icons drawn with PIL (category shape on a coloured
tile) and served by the ingress under /static/catalog/images/. Output is deterministic: running
this again writes byte-identical files.

Run: `python scripts/make_catalog.py` (the generated files are committed and shipped; a script, not
part of the app, which only reads what it wrote).
"""

from __future__ import annotations

import argparse
import colorsys
import json
from pathlib import Path
from urllib.parse import quote

from PIL import Image, ImageDraw

from serve_app.paths import PACKAGE_DATA_DIR, load_yaml_config

CATALOG_DIR = PACKAGE_DATA_DIR / "catalog"
IMAGE_SIZE = 96
# Mall names; the empty ones become 네이버 at search time, as for Naver items with no mallName.
MALLS = ["데스크하우스", "오피스몰", "", "PC마켓", "리빙데코", "테크스토어", "홈오피스몰", "", "모던데스크"]

# (Korean category = desk_items.yaml name, file slug, icon shape, hue 0..1, products: (category4, title, KRW))
Product = tuple[str, str, int]
CATEGORIES: list[tuple[str, str, str, float, list[Product]]] = [
    (
        "마우스",
        "mouse",
        "mouse",
        0.58,
        [
            ("무선마우스", "저소음 무선 마우스 2.4GHz 슬림 화이트", 12900),
            ("무선마우스", "인체공학 버티컬 무선 마우스 충전식", 29900),
            ("무선마우스", "블루투스 멀티페어링 무선 마우스 3대 연결", 24500),
            ("유선마우스", "사무용 유선 광마우스 USB 블랙", 5900),
            ("유선마우스", "초경량 게이밍 유선 마우스 58g 허니콤", 39000),
            ("게이밍마우스", "게이밍 무선 마우스 26000DPI 듀얼모드", 69000),
            ("게이밍마우스", "RGB 게이밍 마우스 매크로 버튼 8개", 19900),
            ("트랙볼", "엄지 트랙볼 무선 마우스 인체공학", 45900),
            ("무선마우스", "미니 휴대용 무선 마우스 노트북용 파스텔", 8900),
            ("유선마우스", "저소음 유선 마우스 클릭음 없는 사무용", 7500),
        ],
    ),
    (
        "키보드",
        "keyboard",
        "keyboard",
        0.62,
        [
            ("기계식키보드", "기계식 키보드 87키 텐키리스 갈축", 49000),
            ("기계식키보드", "풀배열 기계식 키보드 적축 화이트 LED", 59900),
            ("기계식키보드", "가스켓 마운트 기계식 키보드 75% 핫스왑", 89000),
            ("무선키보드", "블루투스 무선 키보드 멀티페어링 슬림", 29900),
            ("무선키보드", "무선 키보드 마우스 세트 저소음 사무용", 24900),
            ("멤브레인키보드", "사무용 멤브레인 키보드 USB 풀배열", 9900),
            ("멤브레인키보드", "저소음 멤브레인 키보드 생활방수", 14900),
            ("미니키보드", "60% 미니 기계식 키보드 블루투스 유무선", 64900),
            ("무접점키보드", "무접점 키보드 45g 균등 텐키리스", 189000),
            ("게이밍키보드", "게이밍 기계식 키보드 RGB 광축", 79000),
        ],
    ),
    (
        "모니터",
        "monitor",
        "monitor",
        0.55,
        [
            ("27인치모니터", "27인치 QHD IPS 모니터 75Hz 베젤리스", 219000),
            ("27인치모니터", "27인치 FHD IPS 모니터 100Hz 슬림", 139000),
            ("게이밍모니터", "27인치 QHD 게이밍 모니터 165Hz 1ms", 299000),
            ("게이밍모니터", "24인치 FHD 게이밍 모니터 144Hz", 169000),
            ("4K모니터", "27인치 4K UHD IPS 모니터 HDR400 USB-C", 389000),
            ("4K모니터", "32인치 4K UHD 모니터 피벗 스탠드", 449000),
            ("24인치모니터", "24인치 FHD IPS 사무용 모니터", 109000),
            ("와이드모니터", "34인치 울트라와이드 커브드 모니터 WQHD", 459000),
            ("포터블모니터", "15.6인치 포터블 모니터 USB-C 휴대용", 129000),
            ("24인치모니터", "24인치 FHD VA 모니터 플리커프리", 99000),
        ],
    ),
    (
        "모니터암",
        "monitor-arm",
        "arm",
        0.08,
        [
            ("싱글모니터암", "싱글 모니터암 가스스프링 17~32인치", 39900),
            ("싱글모니터암", "클램프형 싱글 모니터암 알루미늄 블랙", 54900),
            ("듀얼모니터암", "듀얼 모니터암 가스스프링 양팔형", 79900),
            ("듀얼모니터암", "상하 듀얼 모니터암 스탠드형", 69000),
            ("모니터스탠드", "높이조절 모니터 스탠드 VESA 거치형", 29900),
            ("싱글모니터암", "고중량 싱글 모니터암 49인치 지원", 129000),
            ("노트북트레이암", "모니터암 노트북 트레이 결합형", 59900),
            ("모니터암부품", "모니터암 VESA 확장 브라켓 어댑터", 12900),
            ("듀얼모니터암", "듀얼 모니터암 화이트 USB 허브 포함", 99000),
            ("싱글모니터암", "벽걸이형 모니터암 원터치 틸트", 34900),
        ],
    ),
    (
        "데스크 램프",
        "desk-lamp",
        "lamp",
        0.13,
        [
            ("LED스탠드", "LED 책상 스탠드 무선충전 겸용 5단 밝기", 34900),
            ("LED스탠드", "눈보호 LED 데스크 스탠드 색온도 조절", 29900),
            ("모니터조명", "모니터 걸이형 LED 라이트바 비대칭 조명", 39900),
            ("모니터조명", "USB 모니터 라이트바 무선 리모컨", 49900),
            ("집게형스탠드", "집게형 LED 스탠드 플렉시블 암", 19900),
            ("장스탠드", "클램프 장스탠드 LED 롱암 책상 조명", 54900),
            ("무드등", "데스크 무드등 RGB 간접조명 바", 24900),
            ("LED스탠드", "충전식 무선 LED 스탠드 휴대용", 22900),
            ("학습용스탠드", "학습용 LED 스탠드 눈부심 방지", 44900),
            ("무드등", "우드 베이스 감성 테이블 램프", 32900),
        ],
    ),
    (
        "스피커",
        "speaker",
        "speaker",
        0.75,
        [
            ("블루투스스피커", "휴대용 블루투스 스피커 방수 IPX7", 29900),
            ("블루투스스피커", "미니 블루투스 스피커 우드 패브릭", 19900),
            ("PC스피커", "2채널 PC 스피커 USB 전원 데스크용", 15900),
            ("PC스피커", "북쉘프 PC 스피커 2.0 광입력", 89000),
            ("사운드바", "모니터 하단 사운드바 USB 블루투스 겸용", 39900),
            ("사운드바", "컴퓨터 사운드바 RGB 게이밍", 29900),
            ("게이밍스피커", "게이밍 2.1채널 스피커 우퍼 포함", 69000),
            ("블루투스스피커", "무드등 블루투스 스피커 알람시계", 34900),
            ("북쉘프스피커", "액티브 북쉘프 스피커 4인치 우드", 149000),
            ("PC스피커", "USB 미니 스피커 노트북 연결용", 9900),
        ],
    ),
    (
        "헤드셋",
        "headset",
        "headset",
        0.92,
        [
            ("게이밍헤드셋", "게이밍 헤드셋 7.1 가상 서라운드 USB", 39900),
            ("게이밍헤드셋", "무선 게이밍 헤드셋 2.4GHz 저지연", 99000),
            ("게이밍헤드셋", "게이밍 헤드셋 3.5mm 노이즈캔슬링 마이크", 24900),
            ("블루투스헤드폰", "블루투스 헤드폰 노이즈캔슬링 40시간 재생", 89000),
            ("블루투스헤드폰", "접이식 블루투스 헤드폰 경량", 29900),
            ("유선헤드폰", "모니터링 유선 헤드폰 밀폐형", 59000),
            ("사무용헤드셋", "화상회의 USB 헤드셋 한쪽 귀", 27900),
            ("사무용헤드셋", "콜센터 헤드셋 노이즈캔슬링 마이크", 34900),
            ("이어폰", "유선 이어폰 마이크 내장 C타입", 9900),
            ("헤드셋거치대", "헤드셋 거치대 알루미늄 USB 허브", 19900),
        ],
    ),
    (
        "노트북 거치대",
        "laptop-stand",
        "laptop_stand",
        0.45,
        [
            ("알루미늄거치대", "알루미늄 노트북 거치대 각도 조절 접이식", 19900),
            ("알루미늄거치대", "높이조절 노트북 스탠드 10단 알루미늄", 29900),
            ("휴대용거치대", "휴대용 접이식 노트북 거치대 파우치 포함", 12900),
            ("수직거치대", "노트북 수직 거치대 클램쉘 2단", 17900),
            ("쿨링거치대", "노트북 쿨링 패드 거치대 팬 5개", 24900),
            ("우드거치대", "원목 노트북 거치대 받침대", 34900),
            ("회전거치대", "360도 회전 노트북 거치대 원형 베이스", 32900),
            ("좌식거치대", "좌식 노트북 테이블 거치대 각도 조절", 27900),
            ("허브일체형거치대", "노트북 받침대 USB 허브 일체형", 39900),
            ("알루미늄거치대", "초경량 노트북 거치대 스틱형", 9900),
        ],
    ),
    (
        "노트북",
        "laptop",
        "laptop",
        0.0,
        [
            ("사무용노트북", "15.6인치 사무용 노트북 i5 16GB 512GB", 699000),
            ("사무용노트북", "14인치 경량 노트북 1.1kg 라이젠5", 749000),
            ("게이밍노트북", "16인치 게이밍 노트북 RTX 4060 165Hz", 1490000),
            ("게이밍노트북", "15.6인치 게이밍 노트북 RTX 4050", 1190000),
            ("울트라북", "13.3인치 울트라북 OLED 990g", 1290000),
            ("2in1노트북", "14인치 2in1 터치 노트북 펜 지원", 899000),
            ("크롬북", "11.6인치 학생용 크롬북", 299000),
            ("울트라북", "14인치 울트라북 32GB 1TB 고해상도", 1590000),
            ("사무용노트북", "15.6인치 가성비 노트북 8GB 256GB", 399000),
            ("크리에이터노트북", "16인치 크리에이터 노트북 DCI-P3 100%", 1890000),
        ],
    ),
    (
        "장패드",
        "desk-mat",
        "mat",
        0.33,
        [
            ("장패드", "데스크 장패드 900x400 대형 블랙", 9900),
            ("장패드", "방수 가죽 데스크매트 양면 800x400", 14900),
            ("장패드", "펠트 데스크 매트 울 그레이", 19900),
            ("게이밍장패드", "RGB 게이밍 장패드 LED 테두리", 24900),
            ("게이밍장패드", "게이밍 마우스패드 XXL 스피드형", 17900),
            ("마우스패드", "손목 보호 마우스패드 메모리폼", 7900),
            ("마우스패드", "미니 마우스패드 원형 패브릭", 3900),
            ("장패드", "코르크 데스크 매트 친환경", 15900),
            ("장패드", "일러스트 디자인 장패드 파스텔", 12900),
            ("무선충전매트", "무선충전 데스크 매트 15W", 49900),
        ],
    ),
    (
        "의자",
        "chair",
        "chair",
        0.03,
        [
            ("사무용의자", "메쉬 사무용 의자 요추 지지대 헤드레스트", 129000),
            ("사무용의자", "인체공학 사무용 의자 3D 팔걸이", 189000),
            ("사무용의자", "컴퓨터 의자 메쉬 등판 가성비", 59900),
            ("게이밍의자", "게이밍 의자 리클라이닝 발받침", 159000),
            ("게이밍의자", "패브릭 게이밍 의자 통기성", 179000),
            ("학생의자", "학생 의자 높이조절 바퀴형", 69000),
            ("스툴", "원목 스툴 보조 의자", 29900),
            ("중역의자", "가죽 중역 의자 하이백", 249000),
            ("좌식의자", "좌식 의자 등받이 접이식", 39900),
            ("회의용의자", "바퀴 없는 회의용 의자 4다리", 49900),
        ],
    ),
    (
        "화분",
        "plant",
        "plant",
        0.30,
        [
            ("다육식물", "미니 다육이 화분 3종 세트", 12900),
            ("공기정화식물", "스투키 미니 화분 공기정화", 15900),
            ("공기정화식물", "몬스테라 소형 화분 세라믹", 24900),
            ("인조식물", "인조 식물 미니 화분 관리 필요 없는", 9900),
            ("인조식물", "조화 유칼립투스 화분 인테리어", 14900),
            ("선인장", "미니 선인장 화분 5종", 11900),
            ("수경재배", "테이블 야자 수경재배 유리 화병", 17900),
            ("빈화분", "세라믹 미니 화분 배수구멍 무광", 6900),
            ("빈화분", "시멘트 화분 북유럽 스타일 소형", 8900),
            ("공기정화식물", "아이비 행잉 화분 책상용", 13900),
        ],
    ),
    (
        "웹캠",
        "webcam",
        "webcam",
        0.50,
        [
            ("FHD웹캠", "FHD 1080p 웹캠 마이크 내장 화상회의", 29900),
            ("FHD웹캠", "자동초점 FHD 웹캠 프라이버시 커버", 39900),
            ("4K웹캠", "4K UHD 웹캠 HDR 방송용", 129000),
            ("QHD웹캠", "2K QHD 웹캠 광각 90도", 49900),
            ("HD웹캠", "HD 720p 웹캠 USB 가성비", 15900),
            ("방송용웹캠", "스트리밍 웹캠 링라이트 일체형", 59900),
            ("FHD웹캠", "FHD 60fps 웹캠 듀얼 마이크 노이즈 감소", 69000),
            ("웹캠거치대", "웹캠 모니터 거치대 클립형", 9900),
            ("AI웹캠", "AI 얼굴 추적 웹캠 자동 프레이밍", 99000),
            ("FHD웹캠", "초소형 FHD 웹캠 노트북용", 24900),
        ],
    ),
    (
        "마이크",
        "microphone",
        "mic",
        0.83,
        [
            ("콘덴서마이크", "USB 콘덴서 마이크 스탠드 포함", 39900),
            ("콘덴서마이크", "USB 콘덴서 마이크 RGB 게이밍", 49900),
            ("콘덴서마이크", "XLR 콘덴서 마이크 스튜디오용", 89000),
            ("다이나믹마이크", "USB XLR 겸용 다이나믹 마이크", 79000),
            ("핀마이크", "무선 핀마이크 C타입 2채널", 29900),
            ("구즈넥마이크", "구즈넥 데스크 마이크 회의용", 24900),
            ("마이크암", "마이크 붐암 스탠드 클램프형", 19900),
            ("팝필터", "마이크 팝필터 이중망", 7900),
            ("콘덴서마이크", "미니 USB 콘덴서 마이크 노트북용", 15900),
            ("게이밍마이크", "게이밍 USB 마이크 터치 음소거", 34900),
        ],
    ),
    (
        "데스크 선반",
        "desk-shelf",
        "shelf",
        0.10,
        [
            ("모니터선반", "모니터 받침대 선반 원목 1단", 19900),
            ("모니터선반", "USB 허브 모니터 받침대 서랍형", 34900),
            ("책상선반", "책상 위 2단 선반 철제 수납", 24900),
            ("책상선반", "데스크 오거나이저 선반 우드 3칸", 29900),
            ("모니터선반", "확장형 모니터 선반 길이조절", 27900),
            ("책상선반", "책상 위 책꽂이 선반 화이트", 17900),
            ("클램프선반", "클램프형 책상 확장 선반", 39900),
            ("모니터선반", "강화유리 모니터 받침대", 22900),
            ("모니터선반", "듀얼 모니터 받침대 대형 선반 120cm", 44900),
            ("수납선반", "책상 하부 서랍 수납 트레이", 15900),
        ],
    ),
    (
        "무선충전기",
        "wireless-charger",
        "charger",
        0.16,
        [
            ("고속무선충전기", "15W 고속 무선충전기 패드형", 14900),
            ("고속무선충전기", "거치형 고속 무선충전기 스탠드 15W", 19900),
            ("멀티무선충전기", "3in1 무선충전기 스마트폰 워치 이어폰", 39900),
            ("멀티무선충전기", "2in1 듀얼 무선충전 패드", 29900),
            ("자석식무선충전기", "자석식 무선충전기 맥세이프 호환", 24900),
            ("자석식무선충전기", "접이식 자석 무선충전 스탠드", 34900),
            ("무드등무선충전기", "LED 무드등 무선충전기", 27900),
            ("고속무선충전기", "초슬림 무선충전 패드 알루미늄", 12900),
            ("멀티무선충전기", "접이식 3in1 여행용 무선충전기", 44900),
            ("무선충전매트", "무선충전 가죽 데스크 매트", 39900),
        ],
    ),
    (
        "책상",
        "desk",
        "desk",
        0.07,
        [
            ("컴퓨터책상", "컴퓨터 책상 1200 철제 프레임", 69900),
            ("컴퓨터책상", "1400 컴퓨터 책상 원목 상판", 129000),
            ("모션데스크", "전동 높이조절 모션데스크 1400", 299000),
            ("모션데스크", "듀얼모터 모션데스크 1600 메모리 기능", 429000),
            ("게이밍책상", "게이밍 책상 카본 상판 LED", 149000),
            ("코너책상", "L자 코너 책상 컴퓨터용", 159000),
            ("접이식책상", "접이식 좌식 책상 노트북용", 29900),
            ("높이조절책상", "수동 높이조절 책상 크랭크식", 189000),
            ("학생책상", "학생 책상 책장 일체형", 119000),
            ("컴퓨터책상", "미니 컴퓨터 책상 800 원룸용", 49900),
        ],
    ),
]


def _rgb(hue: float, sat: float, val: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, sat, val)
    return round(r * 255), round(g * 255), round(b * 255)


def draw_icon(shape: str, hue: float, variant: int) -> Image.Image:
    """A 96x96 tile: pastel background (shade varies per product) and the category's shape."""
    bg = _rgb(hue + 0.03 * (variant % 3), 0.18 + 0.04 * (variant % 4), 0.97)
    fg = _rgb(hue, 0.65, 0.45 + 0.05 * (variant % 5))
    accent = _rgb(hue + 0.5, 0.5, 0.9)
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), bg)
    d = ImageDraw.Draw(img)
    if shape == "mouse":
        d.ellipse((30, 14, 66, 82), fill=fg)
        d.line((48, 14, 48, 40), fill=bg, width=3)
        d.rounded_rectangle((45, 24, 51, 34), radius=2, fill=accent)
    elif shape == "keyboard":
        d.rounded_rectangle((8, 30, 88, 68), radius=6, fill=fg)
        for row in range(3):
            for col in range(8):
                x, y = 13 + col * 9.5, 35 + row * 9
                d.rectangle((x, y, x + 6, y + 5), fill=bg)
        d.rectangle((30, 62, 66, 65), fill=accent)
    elif shape == "monitor":
        d.rounded_rectangle((10, 14, 86, 62), radius=4, fill=fg)
        d.rectangle((15, 19, 81, 57), fill=accent)
        d.rectangle((44, 62, 52, 76), fill=fg)
        d.rounded_rectangle((30, 76, 66, 82), radius=2, fill=fg)
    elif shape == "arm":
        d.rectangle((12, 78, 34, 84), fill=fg)
        d.line((22, 78, 22, 50), fill=fg, width=6)
        d.line((22, 50, 52, 34), fill=fg, width=6)
        d.line((52, 34, 66, 44), fill=fg, width=5)
        d.rounded_rectangle((62, 22, 88, 62), radius=3, fill=accent, outline=fg, width=3)
    elif shape == "lamp":
        d.polygon([(30, 16), (62, 16), (74, 42), (18, 42)], fill=fg)
        d.ellipse((38, 40, 54, 50), fill=accent)
        d.line((46, 42, 46, 76), fill=fg, width=5)
        d.rounded_rectangle((26, 76, 66, 84), radius=3, fill=fg)
    elif shape == "speaker":
        d.rounded_rectangle((28, 10, 68, 86), radius=6, fill=fg)
        d.ellipse((38, 18, 58, 38), fill=accent)
        d.ellipse((33, 46, 63, 76), fill=accent)
        d.ellipse((43, 56, 53, 66), fill=fg)
    elif shape == "headset":
        d.arc((18, 12, 78, 72), start=180, end=360, fill=fg, width=7)
        d.rounded_rectangle((12, 40, 30, 72), radius=6, fill=fg)
        d.rounded_rectangle((66, 40, 84, 72), radius=6, fill=fg)
        d.line((20, 72, 36, 84), fill=accent, width=3)
    elif shape == "laptop_stand":
        d.polygon([(14, 74), (82, 74), (70, 34), (60, 34), (68, 66), (28, 66)], fill=fg)
        d.line((20, 62, 78, 30), fill=accent, width=5)
    elif shape == "laptop":
        d.rounded_rectangle((20, 18, 76, 60), radius=3, fill=fg)
        d.rectangle((25, 23, 71, 55), fill=accent)
        d.polygon([(12, 64), (84, 64), (90, 74), (6, 74)], fill=fg)
    elif shape == "mat":
        d.rounded_rectangle((8, 26, 88, 70), radius=8, fill=fg)
        d.rounded_rectangle((12, 30, 84, 66), radius=6, outline=accent, width=2)
        d.ellipse((62, 40, 74, 56), fill=bg)
    elif shape == "chair":
        d.rounded_rectangle((30, 10, 66, 48), radius=8, fill=fg)
        d.rounded_rectangle((24, 50, 72, 60), radius=4, fill=fg)
        d.line((48, 60, 48, 76), fill=fg, width=5)
        d.line((28, 84, 68, 84), fill=accent, width=4)
        d.line((48, 76, 28, 84), fill=fg, width=3)
        d.line((48, 76, 68, 84), fill=fg, width=3)
    elif shape == "plant":
        for box in ((26, 16, 48, 50), (48, 16, 70, 50), (38, 8, 58, 44)):
            d.ellipse(box, fill=_rgb(0.32, 0.6, 0.6 + 0.04 * (variant % 4)))
        d.polygon([(28, 50), (68, 50), (62, 86), (34, 86)], fill=fg)
        d.rectangle((26, 48, 70, 54), fill=accent)
    elif shape == "webcam":
        d.rounded_rectangle((18, 24, 78, 56), radius=14, fill=fg)
        d.ellipse((36, 28, 60, 52), fill=accent)
        d.ellipse((43, 35, 53, 45), fill=fg)
        d.line((48, 56, 48, 72), fill=fg, width=4)
        d.rounded_rectangle((34, 72, 62, 78), radius=2, fill=fg)
    elif shape == "mic":
        d.rounded_rectangle((36, 10, 60, 52), radius=12, fill=fg)
        for y in (20, 28, 36):
            d.line((40, y, 56, y), fill=accent, width=2)
        d.arc((28, 30, 68, 64), start=0, end=180, fill=fg, width=4)
        d.line((48, 64, 48, 80), fill=fg, width=4)
        d.rounded_rectangle((32, 80, 64, 86), radius=2, fill=fg)
    elif shape == "shelf":
        d.rectangle((10, 30, 86, 36), fill=fg)
        d.rectangle((10, 58, 86, 64), fill=fg)
        for x in (12, 80):
            d.rectangle((x, 30, x + 4, 82), fill=fg)
        d.rectangle((22, 44, 34, 58), fill=accent)
        d.rectangle((38, 48, 46, 58), fill=accent)
    elif shape == "charger":
        d.ellipse((14, 14, 82, 82), fill=fg)
        d.ellipse((22, 22, 74, 74), outline=accent, width=3)
        d.polygon([(52, 24), (34, 52), (46, 52), (42, 72), (62, 42), (50, 42)], fill=accent)
    elif shape == "desk":
        d.rectangle((8, 34, 88, 42), fill=fg)
        for x in (14, 76):
            d.rectangle((x, 42, x + 6, 84), fill=fg)
        d.rectangle((50, 42, 74, 62), fill=fg)
        d.rectangle((54, 50, 70, 52), fill=accent)
    else:  # pragma: no cover - every category names a shape above
        raise ValueError(f"unknown shape {shape}")
    # A row of dots numbers the product inside its category, so sibling images differ visibly.
    for i in range(variant % 5 + 1):
        d.ellipse((6 + i * 6, 88, 10 + i * 6, 92), fill=fg)
    return img


def build_products() -> list[dict[str, object]]:
    """The catalog rows, in a fixed order; `image` is the file name under images/."""
    rows: list[dict[str, object]] = []
    for cat_index, (name, slug, _shape, _hue, products) in enumerate(CATEGORIES):
        for i, (category4, title, price) in enumerate(products, start=1):
            rows.append(
                {
                    "id": f"{slug}-{i:03d}",
                    "title": title,
                    "price": price,
                    "mall": MALLS[(cat_index * 3 + i) % len(MALLS)],
                    "category3": name,
                    "category4": category4,
                    "link": f"https://search.shopping.naver.com/search/all?query={quote(title)}",
                    "image": f"{slug}-{i:03d}.png",
                }
            )
    return rows


def check_coverage(rows: list[dict[str, object]], min_per_item: int = 5) -> None:
    """Every item of configs/desk_items.yaml has at least `min_per_item` products."""
    vocabulary = [entry["name"] for entry in load_yaml_config("desk_items.yaml")["items"]]
    counts = {name: sum(1 for row in rows if row["category3"] == name) for name in vocabulary}
    short = {name: n for name, n in counts.items() if n < min_per_item}
    if short:
        raise SystemExit(f"catalog too thin for {short}")


def write_catalog(out_dir: Path = CATALOG_DIR) -> int:
    """Write catalog.json and images/*.png (stale PNGs removed); return the product count."""
    rows = build_products()
    check_coverage(rows)
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    wanted = {str(row["image"]) for row in rows}
    for stale in images.glob("*.png"):
        if stale.name not in wanted:
            stale.unlink()
    shapes = {name: (shape, hue) for name, _slug, shape, hue, _products in CATEGORIES}
    for row in rows:
        shape, hue = shapes[str(row["category3"])]
        variant = int(str(row["id"]).rsplit("-", 1)[1]) - 1
        icon = draw_icon(shape, hue, variant).quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=0)
        icon.save(images / str(row["image"]), format="PNG", optimize=True)
    doc = {"version": 1, "currency": "KRW", "products": rows}
    (out_dir / "catalog.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CATALOG_DIR, help="Output folder (default: package data).")
    args = parser.parse_args()
    count = write_catalog(args.out)
    print(f"wrote {count} products to {args.out}")


if __name__ == "__main__":
    main()
